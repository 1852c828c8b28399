%{
  bench: "curves",
  curves: [
    %{
      name: "subscribers",
      p99: "p99 publish → last delivery (µs)",
      points: [
        {1, 421_117.3506665235, 3.858},
        {3, 861_488.4947061002, 23.303},
        {10, 970_007.3720560276, 28.884},
        {30, 1_284_450.8102483733, 66.206},
        {100, 1_073_260.7809045443, 209.748},
        {300, 1_011_348.5659907471, 695.941},
        {1000, 1_243_951.2868676065, 2544.985}
      ],
      throughput: "deliveries/s",
      title: "Mesh publish to N subscribers",
      x: "subscribers"
    },
    %{
      name: "hosts",
      p99: "p99 publish → all acked (µs)",
      points: [
        {1, 46555.17290901974, 554.118},
        {2, 79234.14807959007, 474.855},
        {4, 101_705.0947275489, 833.417},
        {8, 100_673.07872744826, 1814.533},
        {16, 95115.12934204708, 2388.308}
      ],
      throughput: "deliveries/s",
      title: "Fan-out to N Python agent hosts",
      x: "hosts"
    },
    %{
      name: "wasm_agents",
      p99: "p99 publish → all acked (µs)",
      points: [
        {10, 12116.180357179746, 1637.514},
        {100, 12607.471534841312, 22794.72},
        {1000, 9824.285797706065, 173_541.273},
        {10000, 13477.89577583181, 1_145_337.204}
      ],
      throughput: "deliveries/s",
      title: "Fan-out to N Wasm agents",
      x: "Wasm agents"
    }
  ],
  date: ~D[2026-11-25],
  details:
    "Each point publishes events that reach all N recipients. Throughput: deliveries per second with the events published back to back (3 round(s) a point, the median; 200000 deliveries a round to subscribers, 60000 to hosts, 30000 to Wasm agents). Latency: the p99 of single publishes on an otherwise idle system, until the last recipient has the event (subscribers: 1000 publishes) or has acked it (hosts: 300 publishes; Wasm agents: 30000 deliveries' worth, 20 to 300 publishes: with fewer than 100 the p99 is the slowest one). Its \"vs first\" grows at least like the work (N) once the recipients outnumber the cores.\n",
  machine:
    "2 cores (AMD EPYC), 23 GiB RAM; OTP 25, Elixir 1.14.0, Python 3.11.7, wasmtime 50.0.1",
  quick: false,
  rows: [],
  seconds: 86.711
}
