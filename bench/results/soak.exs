%{
  bench: "soak",
  curves: [],
  date: ~D[2026-12-05],
  details:
    "Seed 287262: 240000 sent, 2900 kills, 240000 out of the last stage,\n0 dead-lettered %{}. Each stage's count,\n%{a: 240000, b: 240000, c: 240000}, against the messages that reached it less those it dead-lettered,\n%{a: 240000, b: 240000, c: 240000}. Copies published again (after a crash, or by the first stage's\nhandler that fails the first attempt at every 7th message after publishing), by stage:\n%{a: 34393, b: 114, c: 10}; duplicates dropped by the dedupe stages: %{a: 0, b: 34393, c: 114};\ndeliveries sent again: %{a: 36440, b: 2412, c: 1911}; host restarts\n%{a: 1005, b: 841, c: 987}; messages out of order at the end: 0.\n\n| s | BEAM (MB) | Python processes' RSS (MB) |\n|---|---|---|\n| 2 | 34.2 | 84.8 |\n| 32 | 36.0 | 74.1 |\n| 62 | 36.0 | 72.2 |\n| 92 | 35.9 | 56.5 |\n| 122 | 36.4 | 73.4 |\n| 152 | 36.7 | 73.6 |\n| 182 | 36.8 | 68.9 |\n| 212 | 36.4 | 84.4 |\n| 242 | 36.8 | 74.2 |\n| 272 | 36.8 | 85.5 |\n| 302 | 37.2 | 94.8 |\n| 332 | 38.7 | 74.3 |\n| 362 | 37.5 | 74.1 |\n| 392 | 37.8 | 61.8 |\n| 422 | 37.9 | 61.8 |\n| 452 | 38.5 | 94.8 |\n| 482 | 39.4 | 95.0 |\n| 512 | 38.5 | 94.8 |\n| 542 | 38.5 | 94.8 |\n| 572 | 38.3 | 94.9 |\n",
  machine:
    "2 cores (AMD EPYC), 23 GiB RAM; OTP 25, Elixir 1.14.0, Python 3.11.7, wasmtime 51.0.0",
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
      value: 399.9953333877772
    },
    %{
      base: 34.2,
      baseline: "at the first sample",
      measure: "soak: BEAM memory at the end (MB)",
      target: "≤ 1.5×",
      value: 38.3
    },
    %{
      base: 34.2,
      baseline: "at the first sample",
      measure: "soak: BEAM memory, highest sample (MB)",
      target: "(info)",
      value: 39.4
    },
    %{
      base: 84.8,
      baseline: "at the first sample",
      measure: "soak: Python processes' RSS at the end (MB)",
      target: "(info)",
      value: 94.9
    }
  ],
  seconds: 601.376
}
