%{
  bench: "curves",
  curves: [
    %{
      name: "subscribers",
      p99: "p99 publish → last delivery (µs)",
      points: [
        {1, 755_983.6102753292, 3.557},
        {3, 1_504_140.1872673258, 25.057},
        {10, 2_018_978.396931153, 26.99},
        {30, 2_146_882.9509710246, 53.6},
        {100, 2_035_851.3421349972, 143.86},
        {300, 1_833_717.2697987317, 259.897},
        {1000, 1_598_491.0244728976, 1170.37}
      ],
      throughput: "deliveries/s",
      title: "Mesh publish to N subscribers",
      x: "subscribers"
    },
    %{
      name: "hosts",
      p99: "p99 publish → all acked (µs)",
      points: [
        {1, 73366.63045249028, 167.341},
        {2, 99362.23718766926, 426.204},
        {4, 126_221.15814980988, 682.753},
        {8, 131_305.9404339355, 1339.507},
        {16, 90086.31796223873, 2134.044}
      ],
      throughput: "deliveries/s",
      title: "Fan-out to N Python agent hosts",
      x: "hosts"
    },
    %{
      name: "wasm_agents",
      p99: "p99 publish → all acked (µs)",
      points: [
        {10, 14597.123116940282, 1408.857},
        {100, 13650.617077100515, 16887.686},
        {1000, 13079.96445776026, 178_184.295},
        {10000, 13827.596052860163, 1_261_900.298}
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
  seconds: 72.693
}
