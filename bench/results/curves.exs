%{
  bench: "curves",
  curves: [
    %{
      name: "subscribers",
      p99: "p99 publish → last delivery (µs)",
      points: [
        {1, 1_139_769.994415127, 2.744},
        {3, 2_031_282.0564905189, 3.175},
        {10, 2_697_963.037906381, 25.308},
        {30, 2_726_380.3680981593, 24.306},
        {100, 2_551_931.812381973, 60.13},
        {300, 2_390_524.048815506, 193.649},
        {1000, 1_994_912.9719216, 922.664}
      ],
      throughput: "deliveries/s",
      title: "Mesh publish to N subscribers",
      x: "subscribers"
    },
    %{
      name: "hosts",
      p99: "p99 publish → all acked (µs)",
      points: [
        {1, 124_955.12575078793, 191.455},
        {2, 155_385.18111417018, 210.965},
        {4, 192_827.9644050376, 471.252},
        {8, 191_956.01658044406, 1115.041},
        {16, 160_228.5966433642, 1725.151}
      ],
      throughput: "deliveries/s",
      title: "Fan-out to N Python agent hosts",
      x: "hosts"
    },
    %{
      name: "wasm_agents",
      p99: "p99 publish → all acked (µs)",
      points: [
        {10, 33069.533403081536, 694.935},
        {100, 32726.164726438903, 5684.595},
        {1000, 29785.63688177972, 51462.957},
        {10000, 25191.435174031754, 448_528.217}
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
  seconds: 38.161
}
