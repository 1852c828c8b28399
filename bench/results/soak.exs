%{
  bench: "soak",
  curves: [],
  date: ~D[2026-11-25],
  details:
    "Seed 562791: 240000 sent, 2863 kills, 240000 out of the last stage,\n0 dead-lettered %{}. Each stage's count,\n%{a: 240000, b: 240000, c: 240000}, against the messages that reached it less those it dead-lettered,\n%{a: 240000, b: 240000, c: 240000}. Copies published again (after a crash, or by the first stage's\nhandler that fails the first attempt at every 7th message after publishing), by stage:\n%{a: 34374, b: 92, c: 126}; duplicates dropped by the dedupe stages: %{a: 0, b: 34374, c: 92};\ndeliveries sent again: %{a: 36991, b: 4209, c: 2868}; host restarts\n%{a: 958, b: 810, c: 925}; messages out of order at the end: 0.\n\n| s | BEAM (MB) | Python processes' RSS (MB) |\n|---|---|---|\n| 2 | 34.2 | 86.9 |\n| 32 | 36.2 | 94.4 |\n| 62 | 37.9 | 83.4 |\n| 92 | 36.5 | 72.8 |\n| 122 | 36.9 | 81.5 |\n| 152 | 36.9 | 83.2 |\n| 182 | 37.1 | 94.4 |\n| 212 | 37.4 | 94.6 |\n| 242 | 37.7 | 68.7 |\n| 272 | 37.5 | 83.9 |\n| 302 | 37.9 | 64.0 |\n| 332 | 38.0 | 68.7 |\n| 362 | 37.1 | 73.9 |\n| 392 | 37.1 | 72.8 |\n| 422 | 37.5 | 86.9 |\n| 452 | 37.7 | 89.3 |\n| 482 | 39.3 | 79.6 |\n| 512 | 38.5 | 89.0 |\n| 542 | 40.4 | 60.4 |\n| 572 | 40.5 | 73.9 |\n",
  machine:
    "2 cores (AMD EPYC), 23 GiB RAM; OTP 25, Elixir 1.14.0, Python 3.11.7, wasmtime 50.0.1",
  quick: false,
  rows: [
    %{
      base: nil,
      baseline: nil,
      measure: "soak 600 s, kill -9 every 100-300 ms: messages lost",
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
      value: 399.9373431495732
    },
    %{
      base: 34.2,
      baseline: "at the first sample",
      measure: "soak: BEAM memory at the end (MB)",
      target: "≤ 1.5×",
      value: 40.5
    },
    %{
      base: 34.2,
      baseline: "at the first sample",
      measure: "soak: BEAM memory, highest sample (MB)",
      target: "(info)",
      value: 40.5
    },
    %{
      base: 86.9,
      baseline: "at the first sample",
      measure: "soak: Python processes' RSS at the end (MB)",
      target: "(info)",
      value: 73.9
    }
  ],
  seconds: 601.885
}
