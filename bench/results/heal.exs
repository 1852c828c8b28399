%{
  bench: "heal",
  curves: [],
  date: ~D[2026-12-07],
  details:
    "Load average (1 min) of the machine during this run: 2.53 at the start, 0.84 at the end (2 cores).",
  machine:
    "2 cores (AMD EPYC), 23 GiB RAM; OTP 25, Elixir 1.14.0, Python 3.11.7, wasmtime 51.0.0",
  quick: false,
  rows: [
    %{
      base: 127.121,
      baseline: "cold start (no standby)",
      measure: "crashed host → serving again p50 (ms)",
      target: "< 10 ms",
      value: 10.792
    },
    %{
      base: 176.799,
      baseline: "cold start (no standby)",
      measure: "crashed host → serving again p99 (ms)",
      target: "(info)",
      value: 17.266
    },
    %{
      base: 300,
      baseline: "3 heartbeats of 100 ms",
      measure: "hung host (SIGSTOP) → serving again p50 (ms)",
      target: "(info)",
      value: 265.816
    },
    %{
      base: 200,
      baseline: "conductor tick",
      measure: "crash loop → quarantined p50 (ms)",
      target: "(info)",
      value: 215.362
    },
    %{
      base: 0.641,
      baseline: "conductor tick, 10 agents",
      measure: "conductor tick, 1000 agents p50 (ms)",
      target: "(info)",
      value: 33.195
    },
    %{
      base: 0.129,
      baseline: "conductor snapshot, 10 agents",
      measure: "conductor snapshot, 10000 agents p50 (ms)",
      target: "≤ 50 ms",
      value: 29.636
    },
    %{
      base: 0.144,
      baseline: "the same, 10 agents",
      measure:
        "conductor snapshot, 10000 agents, as a call: with its copy to the caller p50 (ms)",
      target: "(info)",
      value: 33.807
    },
    %{
      base: 0.0,
      baseline: "the same, 10 agents",
      measure: "conductor snapshot, 10000 agents, as a call: BEAM CPU time p50 (ms)",
      target: "(info)",
      value: 46.0
    },
    %{
      base: 29.636,
      baseline: "conductor snapshot, 10000 agents",
      measure: "observing 10000 agents as before step 9: an info call each p50 (ms)",
      target: "(info)",
      value: 322.443
    },
    %{
      base: 36.123,
      baseline: "conductor off: p99 handling time over 15 s (ms)",
      measure: "latency regression after a promotion → rollback: time to detect (ms)",
      target: "(info)",
      value: 1245.557
    },
    %{
      base: 36.123,
      baseline: "conductor off: p99 handling time over 15 s (ms)",
      measure: "latency regression → handled fast again: time to recover (ms)",
      target: "(info)",
      value: 1282.135
    },
    %{
      base: 1430.8,
      baseline: "conductor off: RSS grown over 15 s (MB)",
      measure: "leak (2 MB an event) → restart: time to detect (ms)",
      target: "(info)",
      value: 831.245
    },
    %{
      base: 1430.8,
      baseline: "conductor off: RSS grown over 15 s (MB)",
      measure: "leak → quarantined after the restart did not help: growth stops (ms)",
      target: "(info)",
      value: 2449.082
    },
    %{
      base: 3,
      baseline: "conductor off: crashes over 15 s",
      measure: "crash loop noticed at 2.6 s of backoff → quarantined (ms)",
      target: "(info)",
      value: 213.574
    },
    %{
      base: 12000.0,
      baseline: "conductor off (OTP supervision alone): never, in 12000 ms",
      measure: "noisy neighbour → rerouted (detected) p50 (ms)",
      target: "(info)",
      value: 1281.0
    },
    %{
      base: 11892.0,
      baseline: "conductor off (OTP supervision alone)",
      measure: "noisy neighbour → co-tenants under 50 ms again (recovered) p50 (ms)",
      target: "(info)",
      value: 1273.0
    },
    %{
      base: 378.996,
      baseline: "conductor off (OTP supervision alone)",
      measure: "noisy neighbour: co-tenants' p99, last third of the run (ms)",
      target: "≤ 0.2×",
      value: 3.61
    }
  ],
  seconds: 168.051
}
