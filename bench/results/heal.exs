%{
  bench: "heal",
  curves: [],
  date: ~D[2026-11-25],
  details: nil,
  machine:
    "2 cores (AMD EPYC), 23 GiB RAM; OTP 25, Elixir 1.14.0, Python 3.11.7, wasmtime 50.0.1",
  quick: false,
  rows: [
    %{
      base: 89.765,
      baseline: "cold start (no standby)",
      measure: "crashed host → serving again p50 (ms)",
      target: "< 10 ms",
      value: 5.344
    },
    %{
      base: 117.182,
      baseline: "cold start (no standby)",
      measure: "crashed host → serving again p99 (ms)",
      target: "(info)",
      value: 13.45
    },
    %{
      base: 300,
      baseline: "3 heartbeats of 100 ms",
      measure: "hung host (SIGSTOP) → serving again p50 (ms)",
      target: "(info)",
      value: 240.0
    },
    %{
      base: 200,
      baseline: "conductor tick",
      measure: "crash loop → quarantined p50 (ms)",
      target: "(info)",
      value: 619.121
    },
    %{
      base: 2.035,
      baseline: "conductor tick, 10 agents",
      measure: "conductor tick, 1000 agents p50 (ms)",
      target: "(info)",
      value: 50.109
    }
  ],
  seconds: 24.095
}
