%{
  bench: "curves",
  curves: [
    %{
      name: "subscribers",
      p99: "p99 publish → last delivery (µs)",
      points: [
        {1, 1_075_193.6692596753, 2.874},
        {3, 1_931_135.0359677498, 9.575},
        {10, 1_963_826.31920033, 23.17},
        {30, 2_666_933.3866773355, 24.636},
        {100, 2_534_243.9716671524, 68.882},
        {300, 2_383_139.111869178, 201.17},
        {1000, 1_969_667.1262556629, 846.872}
      ],
      throughput: "deliveries/s",
      title: "Mesh publish to N subscribers",
      x: "subscribers"
    },
    %{
      name: "hosts",
      p99: "p99 publish → all acked (µs)",
      points: [
        {1, 111_684.61928359704, 169.463},
        {2, 149_551.55843566378, 343.622},
        {4, 175_968.8983184104, 652.813},
        {8, 169_898.82666454482, 1282.05},
        {16, 123_340.16463798752, 2419.285}
      ],
      throughput: "deliveries/s",
      title: "Fan-out to N Python agent hosts",
      x: "hosts"
    },
    %{
      name: "wasm_agents",
      p99: "p99 publish → all acked (µs)",
      points: [
        {10, 30876.428471975592, 953.4},
        {100, 31407.528516078157, 7727.794},
        {1000, 29129.770280621615, 107_698.564},
        {10000, 21727.41889940514, 508_719.343}
      ],
      throughput: "deliveries/s",
      title: "Fan-out to N Wasm agents",
      x: "Wasm agents"
    }
  ],
  date: ~D[2026-12-05],
  details:
    "Each point publishes events that reach all N recipients. Throughput: deliveries per second with the events published back to back (3 round(s) a point, the median; 200000 deliveries a round to subscribers, 60000 to hosts, 30000 to Wasm agents). Latency: the p99 of single publishes on an otherwise idle system, until the last recipient has the event (subscribers: 1000 publishes) or has acked it (hosts: 300 publishes; Wasm agents: 30000 deliveries' worth, 20 to 300 publishes: with fewer than 100 the p99 is the slowest one). Its \"vs first\" grows at least like the work (N) once the recipients outnumber the cores.\n",
  machine:
    "2 cores (AMD EPYC), 23 GiB RAM; OTP 25, Elixir 1.14.0, Python 3.11.7, wasmtime 51.0.0",
  quick: false,
  rows: [],
  seconds: 40.65
}
