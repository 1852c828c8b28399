%{
  bench: "soak",
  curves: [],
  date: ~D[2026-11-25],
  details:
    "Seed 932977: 180000 sent, 350 kills, 155913 out,\n24186 dead-lettered %{\"overloaded\" => 24186}, 490\nduplicates (no dedupe yet), restarts %{\"soak-a\" => 106, \"soak-b\" => 70, \"soak-c\" => 106}.\n\n| s | BEAM (MB) | hosts' RSS (MB) |\n|---|---|---|\n| 3 | 30.2 | 58.7 |\n| 33 | 37.3 | 20.6 |\n| 63 | 51.9 | 53.1 |\n| 93 | 54.8 | 20.6 |\n| 123 | 52.0 | 31.1 |\n| 153 | 54.7 | 36.0 |\n| 183 | 53.2 | 41.2 |\n| 213 | 54.8 | 20.6 |\n| 243 | 50.5 | 53.2 |\n| 273 | 47.3 | 20.5 |\n| 300 | 46.3 | 45.4 |\n| 333 | 43.3 | 39.8 |\n| 363 | 46.9 | 20.6 |\n| 393 | 40.8 | 41.2 |\n| 423 | 47.2 | 41.2 |\n| 453 | 49.0 | 20.6 |\n| 483 | 52.6 | 20.5 |\n| 513 | 45.4 | 20.5 |\n| 543 | 49.2 | 20.6 |\n| 573 | 55.4 | 20.5 |\n",
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
      base: 300,
      baseline: "offered load",
      measure: "soak: throughput out of the last stage (msgs/s)",
      target: "(info)",
      value: 258.06617132244986
    },
    %{
      base: 30.2,
      baseline: "at the start",
      measure: "soak: BEAM memory at the end (MB)",
      target: "(info)",
      value: 55.4
    },
    %{
      base: 58.7,
      baseline: "at the start",
      measure: "soak: hosts' RSS at the end (MB)",
      target: "(info)",
      value: 20.5
    }
  ],
  seconds: 622.498
}
