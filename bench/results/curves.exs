%{
  bench: "curves",
  curves: [
    %{
      name: "subscribers",
      p99: "p99 publish → last delivery (µs)",
      points: [
        {1, 455_685.70445592265, 3.837},
        {3, 1_302_944.0314794425, 33.453},
        {10, 1_734_710.6936240708, 26.77},
        {30, 2_173_294.065227078, 61.334},
        {100, 1_832_727.006148799, 131.015},
        {300, 1_914_104.7871779888, 291.243},
        {1000, 1_798_512.6300549447, 1394.289}
      ],
      throughput: "deliveries/s",
      title: "Mesh publish to N subscribers",
      x: "subscribers"
    },
    %{
      name: "hosts",
      p99: "p99 publish → all acked (µs)",
      points: [
        {1, 66669.59072083836, 382.659},
        {2, 88638.52864249829, 596.081},
        {4, 88414.789272066, 914.435},
        {8, 132_783.07554709018, 1124.807},
        {16, 99877.47530716694, 3581.097}
      ],
      throughput: "deliveries/s",
      title: "Fan-out to N Python agent hosts",
      x: "hosts"
    },
    %{
      name: "wasm_agents",
      p99: "p99 publish → all acked (µs)",
      points: [
        {10, 9120.849012989938, 9746.853},
        {100, 12493.417098802061, 17802.216},
        {1000, 11122.149700512855, 148_630.546},
        {10000, 15825.809025406768, 1_211_198.358}
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
  seconds: 78.296
}
