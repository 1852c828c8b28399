%{
  bench: "soak",
  curves: [],
  date: ~D[2026-11-25],
  details:
    "Seed 583584: 24000 sent, 290 kills, 24000 out of the last stage,\n0 dead-lettered %{}. Each stage's count,\n%{a: 24000, b: 24000, c: 24000}, against the messages that reached it less those it dead-lettered,\n%{a: 24000, b: 24000, c: 24000}. Copies published again (after a crash, or by the first stage's\nhandler that fails the first attempt at every 7th message after publishing), by stage:\n%{a: 3453, b: 0, c: 41}; duplicates dropped by the dedupe stages: %{a: 0, b: 3453, c: 0};\ndeliveries sent again: %{a: 3730, b: 402, c: 371}; host restarts\n%{a: 101, b: 80, c: 102}; messages out of order at the end: 0.\n\n| s | BEAM (MB) | Python processes' RSS (MB) |\n|---|---|---|\n| 2 | 29.8 | 73.8 |\n| 4 | 31.3 | 94.5 |\n| 7 | 31.3 | 73.9 |\n| 9 | 31.3 | 61.9 |\n| 12 | 31.8 | 84.5 |\n| 17 | 31.7 | 62.0 |\n| 19 | 31.7 | 73.9 |\n| 22 | 30.9 | 74.0 |\n| 24 | 31.8 | 64.2 |\n| 27 | 32.2 | 61.9 |\n| 32 | 30.9 | 89.6 |\n| 34 | 30.8 | 62.0 |\n| 37 | 31.6 | 64.1 |\n| 39 | 31.5 | 87.6 |\n| 42 | 31.5 | 85.3 |\n| 47 | 31.8 | 61.2 |\n| 49 | 31.9 | 94.5 |\n| 52 | 31.1 | 73.7 |\n| 54 | 31.1 | 94.4 |\n| 57 | 30.9 | 68.7 |\n",
  machine:
    "2 cores (AMD EPYC), 23 GiB RAM; OTP 25, Elixir 1.14.0, Python 3.11.7, wasmtime 50.0.1",
  quick: false,
  rows: [
    %{
      base: nil,
      baseline: nil,
      measure: "soak 60 s, kill -9 every 100-300 ms: messages lost",
      target: "≤ 0",
      value: 0
    },
    %{
      base: nil,
      baseline: nil,
      measure: "soak: stage counts off the messages they got (sum)",
      target: "≤ 0",
      value: 0
    },
    %{
      base: 400,
      baseline: "offered load",
      measure: "soak: throughput out of the last stage (msgs/s)",
      target: "≥ 0.9×",
      value: 399.89336177019464
    },
    %{
      base: 29.8,
      baseline: "at the first sample",
      measure: "soak: BEAM memory at the end (MB)",
      target: "≤ 1.5×",
      value: 30.9
    },
    %{
      base: 29.8,
      baseline: "at the first sample",
      measure: "soak: BEAM memory, highest sample (MB)",
      target: "(info)",
      value: 32.2
    },
    %{
      base: 73.8,
      baseline: "at the first sample",
      measure: "soak: Python processes' RSS at the end (MB)",
      target: "(info)",
      value: 68.7
    }
  ],
  seconds: 61.566
}
