%{
  bench: "heal",
  curves: [],
  date: ~D[2026-12-06],
  details:
    "Load average (1 min) of the machine during this run: 1.43 at the start, 0.80 at the end (2 cores).",
  machine:
    "2 cores (AMD EPYC), 23 GiB RAM; OTP 25, Elixir 1.14.0, Python 3.11.7, wasmtime 51.0.0",
  quick: false,
  rows: [
    %{
      base: 117.943,
      baseline: "cold start (no standby)",
      measure: "crashed host → serving again p50 (ms)",
      target: "< 10 ms",
      value: 11.012
    },
    %{
      base: 168.911,
      baseline: "cold start (no standby)",
      measure: "crashed host → serving again p99 (ms)",
      target: "(info)",
      value: 18.578
    },
    %{
      base: 300,
      baseline: "3 heartbeats of 100 ms",
      measure: "hung host (SIGSTOP) → serving again p50 (ms)",
      target: "(info)",
      value: 268.211
    },
    %{
      base: 200,
      baseline: "conductor tick",
      measure: "crash loop → quarantined p50 (ms)",
      target: "(info)",
      value: 223.478
    },
    %{
      base: 1.051,
      baseline: "conductor tick, 10 agents",
      measure: "conductor tick, 1000 agents p50 (ms)",
      target: "(info)",
      value: 37.865
    },
    %{
      base: 0.127,
      baseline: "conductor snapshot, 10 agents",
      measure: "conductor snapshot, 10000 agents p50 (ms)",
      target: "≤ 50 ms",
      value: 58.656
    },
    %{
      base: 0.14,
      baseline: "the same, 10 agents",
      measure:
        "conductor snapshot, 10000 agents, as a call: with its copy to the caller p50 (ms)",
      target: "(info)",
      value: 67.199
    },
    %{
      base: 0.0,
      baseline: "the same, 10 agents",
      measure: "conductor snapshot, 10000 agents, as a call: BEAM CPU time p50 (ms)",
      target: "(info)",
      value: 62.0
    },
    %{
      base: 58.656,
      baseline: "conductor snapshot, 10000 agents",
      measure: "observing 10000 agents as before step 9: an info call each p50 (ms)",
      target: "(info)",
      value: 330.19
    },
    %{
      base: 32.524,
      baseline: "conductor off: p99 handling time over 15 s (ms)",
      measure: "latency regression after a promotion → rollback: time to detect (ms)",
      target: "(info)",
      value: 1257.495
    },
    %{
      base: 32.524,
      baseline: "conductor off: p99 handling time over 15 s (ms)",
      measure: "latency regression → handled fast again: time to recover (ms)",
      target: "(info)",
      value: 1329.913
    },
    %{
      base: 1430.2,
      baseline: "conductor off: RSS grown over 15 s (MB)",
      measure: "leak (2 MB an event) → restart: time to detect (ms)",
      target: "(info)",
      value: 818.983
    },
    %{
      base: 1430.2,
      baseline: "conductor off: RSS grown over 15 s (MB)",
      measure: "leak → quarantined after the restart did not help: growth stops (ms)",
      target: "(info)",
      value: 2438.537
    },
    %{
      base: 3,
      baseline: "conductor off: crashes over 15 s",
      measure: "crash loop noticed at 2.6 s of backoff → quarantined (ms)",
      target: "(info)",
      value: 209.991
    },
    %{
      base: 12000.0,
      baseline: "conductor off (OTP supervision alone): never, in 12000 ms",
      measure: "noisy neighbour → rerouted (detected) p50 (ms)",
      target: "(info)",
      value: 1260.0
    },
    %{
      base: 11441.0,
      baseline: "conductor off (OTP supervision alone)",
      measure: "noisy neighbour → co-tenants under 50 ms again (recovered) p50 (ms)",
      target: "(info)",
      value: 1068.0
    },
    %{
      base: 235.463,
      baseline: "conductor off (OTP supervision alone)",
      measure: "noisy neighbour: co-tenants' p99, last third of the run (ms)",
      target: "≤ 0.2×",
      value: 2.627
    }
  ],
  seconds: 168.997
}
