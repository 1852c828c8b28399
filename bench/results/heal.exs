%{
  bench: "heal",
  curves: [],
  date: ~D[2026-12-06],
  details:
    "Load average (1 min) of the machine during this run: 5.72 at the start, 4.57 at the end (2 cores).",
  machine:
    "2 cores (AMD EPYC), 23 GiB RAM; OTP 25, Elixir 1.14.0, Python 3.11.7, wasmtime 51.0.0",
  quick: false,
  rows: [
    %{
      base: 209.908,
      baseline: "cold start (no standby)",
      measure: "crashed host → serving again p50 (ms)",
      target: "< 10 ms",
      value: 13.749
    },
    %{
      base: 542.215,
      baseline: "cold start (no standby)",
      measure: "crashed host → serving again p99 (ms)",
      target: "(info)",
      value: 203.86
    },
    %{
      base: 300,
      baseline: "3 heartbeats of 100 ms",
      measure: "hung host (SIGSTOP) → serving again p50 (ms)",
      target: "(info)",
      value: 273.965
    },
    %{
      base: 200,
      baseline: "conductor tick",
      measure: "crash loop → quarantined p50 (ms)",
      target: "(info)",
      value: 413.668
    },
    %{
      base: 0.794,
      baseline: "conductor tick, 10 agents",
      measure: "conductor tick, 1000 agents p50 (ms)",
      target: "(info)",
      value: 60.357
    },
    %{
      base: 0.169,
      baseline: "conductor snapshot, 10 agents",
      measure: "conductor snapshot, 10000 agents p50 (ms)",
      target: "≤ 50 ms",
      value: 70.505
    },
    %{
      base: 0.0,
      baseline: "the same, 10 agents",
      measure: "conductor snapshot, 10000 agents: BEAM CPU time p50 (ms)",
      target: "(info)",
      value: 61.0
    },
    %{
      base: 70.505,
      baseline: "conductor snapshot, 10000 agents",
      measure: "observing 10000 agents as before step 9: an info call each p50 (ms)",
      target: "(info)",
      value: 337.321
    },
    %{
      base: 12000.0,
      baseline: "conductor off (OTP supervision alone): never, in 12000 ms",
      measure: "noisy neighbour → rerouted (detected) p50 (ms)",
      target: "(info)",
      value: 1244.0
    },
    %{
      base: 12000.0,
      baseline: "conductor off (OTP supervision alone)",
      measure: "noisy neighbour → co-tenants under 50 ms again (recovered) p50 (ms)",
      target: "(info)",
      value: 1231.0
    },
    %{
      base: 725.074,
      baseline: "conductor off (OTP supervision alone)",
      measure: "noisy neighbour: co-tenants' p99, last third of the run (ms)",
      target: "≤ 0.2×",
      value: 13.569
    }
  ],
  seconds: 121.342
}
