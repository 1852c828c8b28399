%{
  bench: "curves",
  curves: [
    %{
      name: "subscribers",
      p99: "p99 publish → last delivery (µs)",
      points: [
        {1, 442_494.5185991508, 3.065},
        {3, 1_049_841.7347758303, 17.516},
        {10, 1_852_349.2419260729, 19.98},
        {30, 1_989_534.0045365912, 35.023},
        {100, 2_180_549.4984736154, 78.878},
        {300, 2_363_126.7075896817, 237.414},
        {1000, 1_874_660.2178355174, 1021.241}
      ],
      throughput: "deliveries/s",
      title: "Mesh publish to N subscribers",
      x: "subscribers"
    },
    %{
      name: "hosts",
      p99: "p99 publish → all acked (µs)",
      points: [
        {1, 74453.94693551054, 212.476},
        {2, 109_178.942454296, 487.286},
        {4, 122_661.88382358933, 855.403},
        {8, 134_668.62149542785, 1325.264},
        {16, 101_236.03751937808, 2352.793}
      ],
      throughput: "deliveries/s",
      title: "Fan-out to N Python agent hosts",
      x: "hosts"
    },
    %{
      name: "wasm_agents",
      p99: "p99 publish → all acked (µs)",
      points: [
        {10, 24415.25538630178, 901.433},
        {100, 24156.652178918514, 11840.792},
        {1000, 23319.762672101286, 90170.975},
        {10000, 13920.890735209821, 880_488.102}
      ],
      throughput: "deliveries/s",
      title: "Fan-out to N Wasm agents",
      x: "Wasm agents"
    }
  ],
  date: ~D[2026-12-07],
  details:
    "Each point publishes events that reach all N recipients. Throughput: deliveries per second with the events published back to back (3 round(s) a point, the median; 200000 deliveries a round to subscribers, 60000 to hosts, 30000 to Wasm agents). Latency: the p99 of single publishes on an otherwise idle system, until the last recipient has the event (subscribers: 1000 publishes) or has acked it (hosts: 300 publishes; Wasm agents: 30000 deliveries' worth, 20 to 300 publishes: with fewer than 100 the p99 is the slowest one). Its \"vs first\" grows at least like the work (N) once the recipients outnumber the cores.\n",
  machine:
    "2 cores (AMD EPYC), 23 GiB RAM; OTP 25, Elixir 1.14.0, Python 3.11.7, wasmtime 51.0.0",
  quick: false,
  rows: [],
  seconds: 59.103
}
