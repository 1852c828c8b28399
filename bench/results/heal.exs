%{
  bench: "heal",
  curves: [],
  date: ~D[2026-12-06],
  details: nil,
  machine:
    "2 cores (AMD EPYC), 23 GiB RAM; OTP 25, Elixir 1.14.0, Python 3.11.7, wasmtime 51.0.0",
  quick: true,
  rows: [
    %{
      base: 533.924,
      baseline: "cold start (no standby)",
      measure: "crashed host → serving again p50 (ms)",
      target: "< 10 ms",
      value: 26.434
    },
    %{
      base: 880.879,
      baseline: "cold start (no standby)",
      measure: "crashed host → serving again p99 (ms)",
      target: "(info)",
      value: 34.714
    },
    %{
      base: 300,
      baseline: "3 heartbeats of 100 ms",
      measure: "hung host (SIGSTOP) → serving again p50 (ms)",
      target: "(info)",
      value: 497.094
    },
    %{
      base: 200,
      baseline: "conductor tick",
      measure: "crash loop → quarantined p50 (ms)",
      target: "(info)",
      value: 1470.924
    },
    %{
      base: 2.362,
      baseline: "conductor tick, 10 agents",
      measure: "conductor tick, 200 agents p50 (ms)",
      target: "(info)",
      value: 18.072
    },
    %{
      base: 0.177,
      baseline: "conductor snapshot, 10 agents",
      measure: "conductor snapshot, 10000 agents p50 (ms)",
      target: "≤ 50 ms",
      value: 444.57
    },
    %{
      base: 0.0,
      baseline: "the same, 10 agents",
      measure: "conductor snapshot, 10000 agents: BEAM CPU time p50 (ms)",
      target: "(info)",
      value: 83.0
    },
    %{
      base: 444.57,
      baseline: "conductor snapshot, 10000 agents",
      measure: "observing 10000 agents as before step 9: an info call each p50 (ms)",
      target: "(info)",
      value: 768.825
    },
    %{
      base: 193.473,
      baseline: "conductor off: p99 handling time over 6 s (ms)",
      measure: "latency regression after a promotion → rollback: time to detect (ms)",
      target: "(info)",
      value: 1584.239
    },
    %{
      base: 193.473,
      baseline: "conductor off: p99 handling time over 6 s (ms)",
      measure: "latency regression → handled fast again: time to recover (ms)",
      target: "(info)",
      value: 1596.042
    },
    %{
      base: 542.0,
      baseline: "conductor off: RSS grown over 6 s (MB)",
      measure: "leak (2 MB an event) → restart: time to detect (ms)",
      target: "(info)",
      value: 1370.612
    },
    %{
      base: 542.0,
      baseline: "conductor off: RSS grown over 6 s (MB)",
      measure: "leak → quarantined after the restart did not help: growth stops (ms)",
      target: "(info)",
      value: 3055.912
    },
    %{
      base: 1,
      baseline: "conductor off: crashes over 6 s",
      measure: "crash loop noticed at 2.6 s of backoff → quarantined (ms)",
      target: "(info)",
      value: 655.39
    }
  ],
  seconds: 116.088
}
