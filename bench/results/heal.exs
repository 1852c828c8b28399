%{
  bench: "heal",
  curves: [],
  date: ~D[2026-12-07],
  details:
    "Load average (1 min) of the machine during this run: 2.41 at the start, 1.05 at the end (2 cores).",
  machine:
    "2 cores (AMD EPYC), 23 GiB RAM; OTP 25, Elixir 1.14.0, Python 3.11.7, wasmtime 51.0.0",
  quick: false,
  rows: [
    %{
      base: 110.862,
      baseline: "cold start (no standby)",
      measure: "crashed host → serving again p50 (ms)",
      target: "< 10 ms",
      value: 9.53
    },
    %{
      base: 316.015,
      baseline: "cold start (no standby)",
      measure: "crashed host → serving again p99 (ms)",
      target: "(info)",
      value: 114.813
    },
    %{
      base: 300,
      baseline: "3 heartbeats of 100 ms",
      measure: "hung host (SIGSTOP) → serving again p50 (ms)",
      target: "(info)",
      value: 301.43
    },
    %{
      base: 200,
      baseline: "conductor tick",
      measure: "crash loop → quarantined p50 (ms)",
      target: "(info)",
      value: 239.311
    },
    %{
      base: 1.307,
      baseline: "conductor tick, 10 agents",
      measure: "conductor tick, 1000 agents p50 (ms)",
      target: "(info)",
      value: 47.638
    },
    %{
      base: 0.105,
      baseline: "conductor snapshot, 10 agents",
      measure: "conductor snapshot, 10000 agents p50 (ms)",
      target: "≤ 50 ms",
      value: 32.615
    },
    %{
      base: 0.127,
      baseline: "the same, 10 agents",
      measure:
        "conductor snapshot, 10000 agents, as a call: with its copy to the caller p50 (ms)",
      target: "(info)",
      value: 37.601
    },
    %{
      base: 0.0,
      baseline: "the same, 10 agents",
      measure: "conductor snapshot, 10000 agents, as a call: BEAM CPU time p50 (ms)",
      target: "(info)",
      value: 53.0
    },
    %{
      base: 32.615,
      baseline: "conductor snapshot, 10000 agents",
      measure: "observing 10000 agents as before step 9: an info call each p50 (ms)",
      target: "(info)",
      value: 146.55
    },
    %{
      base: 32.727,
      baseline: "conductor off: p99 handling time over 15 s (ms)",
      measure: "latency regression after a promotion → rollback: time to detect (ms)",
      target: "(info)",
      value: 1243.179
    },
    %{
      base: 32.727,
      baseline: "conductor off: p99 handling time over 15 s (ms)",
      measure: "latency regression → handled fast again: time to recover (ms)",
      target: "(info)",
      value: 1278.512
    },
    %{
      base: 1430.8,
      baseline: "conductor off: RSS grown over 15 s (MB)",
      measure: "leak (2 MB an event) → restart: time to detect (ms)",
      target: "(info)",
      value: 817.847
    },
    %{
      base: 1430.8,
      baseline: "conductor off: RSS grown over 15 s (MB)",
      measure: "leak → quarantined after the restart did not help: growth stops (ms)",
      target: "(info)",
      value: 2436.545
    },
    %{
      base: 3,
      baseline: "conductor off: crashes over 15 s",
      measure: "crash loop noticed at 2.6 s of backoff → quarantined (ms)",
      target: "(info)",
      value: 211.614
    },
    %{
      base: 12000.0,
      baseline: "conductor off (OTP supervision alone): never, in 12000 ms",
      measure: "noisy neighbour → rerouted (detected) p50 (ms)",
      target: "(info)",
      value: 1369.0
    },
    %{
      base: 11813.0,
      baseline: "conductor off (OTP supervision alone)",
      measure: "noisy neighbour → co-tenants under 50 ms again (recovered) p50 (ms)",
      target: "(info)",
      value: 1355.0
    },
    %{
      base: 227.68,
      baseline: "conductor off (OTP supervision alone)",
      measure: "noisy neighbour: co-tenants' p99, last third of the run (ms)",
      target: "≤ 0.2×",
      value: 1.597
    }
  ],
  seconds: 167.502
}
