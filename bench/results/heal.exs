%{
  bench: "heal",
  curves: [],
  date: ~D[2026-12-06],
  details: nil,
  machine:
    "2 cores (AMD EPYC), 23 GiB RAM; OTP 25, Elixir 1.14.0, Python 3.11.7, wasmtime 51.0.0",
  quick: false,
  rows: [
    %{
      base: 71.928,
      baseline: "cold start (no standby)",
      measure: "crashed host → serving again p50 (ms)",
      target: "< 10 ms",
      value: 5.495
    },
    %{
      base: 95.914,
      baseline: "cold start (no standby)",
      measure: "crashed host → serving again p99 (ms)",
      target: "(info)",
      value: 34.412
    },
    %{
      base: 300,
      baseline: "3 heartbeats of 100 ms",
      measure: "hung host (SIGSTOP) → serving again p50 (ms)",
      target: "(info)",
      value: 287.823
    },
    %{
      base: 200,
      baseline: "conductor tick",
      measure: "crash loop → quarantined p50 (ms)",
      target: "(info)",
      value: 205.186
    },
    %{
      base: 0.535,
      baseline: "conductor tick, 10 agents",
      measure: "conductor tick, 1000 agents p50 (ms)",
      target: "(info)",
      value: 23.204
    },
    %{
      base: 0.094,
      baseline: "conductor snapshot, 10 agents",
      measure: "conductor snapshot, 10000 agents p50 (ms)",
      target: "≤ 50 ms",
      value: 45.016
    },
    %{
      base: 0.0,
      baseline: "the same, 10 agents",
      measure: "conductor snapshot, 10000 agents: BEAM CPU time p50 (ms)",
      target: "(info)",
      value: 39.0
    },
    %{
      base: 45.016,
      baseline: "conductor snapshot, 10000 agents",
      measure: "observing 10000 agents as before step 9: an info call each p50 (ms)",
      target: "(info)",
      value: 235.298
    }
  ],
  seconds: 29.596
}
