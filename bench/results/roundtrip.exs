%{
  bench: "roundtrip",
  curves: [],
  date: ~D[2026-12-07],
  details: nil,
  machine:
    "2 cores (AMD EPYC), 23 GiB RAM; OTP 25, Elixir 1.14.0, Python 3.11.7, wasmtime 51.0.0",
  quick: false,
  rows: [
    %{
      base: 49.053,
      baseline: "raw Port echo",
      measure: "call round trip p50 (µs)",
      target: "≤ 1.2×",
      value: 34.922
    },
    %{
      base: 108.642,
      baseline: "raw Port echo",
      measure: "call round trip p99 (µs)",
      target: "≤ 2×",
      value: 102.553
    },
    %{
      base: 353_903.3772999296,
      baseline: "raw Port echo",
      measure: "pipelined casts (msgs/s)",
      target: "≥ 0.5×",
      value: 433_850.77268822613
    },
    %{
      base: 49.053,
      baseline: "raw Port echo",
      measure: "call p50, host spin off (µs)",
      target: "(info)",
      value: 76.073
    },
    %{
      base: 108.642,
      baseline: "raw Port echo",
      measure: "call p99, host spin off (µs)",
      target: "(info)",
      value: 147.74
    }
  ],
  seconds: 22.523
}
