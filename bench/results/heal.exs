%{
  bench: "heal",
  curves: [],
  date: ~D[2026-12-06],
  details:
    "Load average (1 min) of the machine during this run: 0.33 at the start, 0.87 at the end (2 cores).",
  machine:
    "2 cores (AMD EPYC), 23 GiB RAM; OTP 25, Elixir 1.14.0, Python 3.11.7, wasmtime 51.0.0",
  quick: true,
  rows: [
    %{
      base: 123.138,
      baseline: "cold start (no standby)",
      measure: "crashed host → serving again p50 (ms)",
      target: "< 10 ms",
      value: 11.707
    },
    %{
      base: 130.675,
      baseline: "cold start (no standby)",
      measure: "crashed host → serving again p99 (ms)",
      target: "(info)",
      value: 16.951
    },
    %{
      base: 300,
      baseline: "3 heartbeats of 100 ms",
      measure: "hung host (SIGSTOP) → serving again p50 (ms)",
      target: "(info)",
      value: 252.23
    },
    %{
      base: 200,
      baseline: "conductor tick",
      measure: "crash loop → quarantined p50 (ms)",
      target: "(info)",
      value: 222.099
    },
    %{
      base: 0.758,
      baseline: "conductor tick, 10 agents",
      measure: "conductor tick, 200 agents p50 (ms)",
      target: "(info)",
      value: 6.764
    },
    %{
      base: 0.066,
      baseline: "conductor snapshot, 10 agents",
      measure: "conductor snapshot, 10000 agents p50 (ms)",
      target: "≤ 50 ms",
      value: 68.098
    },
    %{
      base: 0.0,
      baseline: "the same, 10 agents",
      measure: "conductor snapshot, 10000 agents: BEAM CPU time p50 (ms)",
      target: "(info)",
      value: 63.0
    },
    %{
      base: 68.098,
      baseline: "conductor snapshot, 10000 agents",
      measure: "observing 10000 agents as before step 9: an info call each p50 (ms)",
      target: "(info)",
      value: 247.971
    },
    %{
      base: 41.763,
      baseline: "conductor off: p99 handling time over 6 s (ms)",
      measure: "latency regression after a promotion → rollback: time to detect (ms)",
      target: "(info)",
      value: 1242.747
    },
    %{
      base: 41.763,
      baseline: "conductor off: p99 handling time over 6 s (ms)",
      measure: "latency regression → handled fast again: time to recover (ms)",
      target: "(info)",
      value: 1279.176
    },
    %{
      base: 571.1,
      baseline: "conductor off: RSS grown over 6 s (MB)",
      measure: "leak (2 MB an event) → restart: time to detect (ms)",
      target: "(info)",
      value: 821.906
    },
    %{
      base: 571.1,
      baseline: "conductor off: RSS grown over 6 s (MB)",
      measure: "leak → quarantined after the restart did not help: growth stops (ms)",
      target: "(info)",
      value: 2437.909
    },
    %{
      base: 1,
      baseline: "conductor off: crashes over 6 s",
      measure: "crash loop noticed at 2.6 s of backoff → quarantined (ms)",
      target: "(info)",
      value: 214.563
    },
    %{
      base: 8000.0,
      baseline: "conductor off (OTP supervision alone): never, in 8000 ms",
      measure: "noisy neighbour → rerouted (detected) p50 (ms)",
      target: "(info)",
      value: 1226.0
    },
    %{
      base: 7676.0,
      baseline: "conductor off (OTP supervision alone)",
      measure: "noisy neighbour → co-tenants under 50 ms again (recovered) p50 (ms)",
      target: "(info)",
      value: 944.0
    },
    %{
      base: 306.684,
      baseline: "conductor off (OTP supervision alone)",
      measure: "noisy neighbour: co-tenants' p99, last third of the run (ms)",
      target: "≤ 0.2×",
      value: 5.413
    }
  ],
  seconds: 65.832
}
