%{
  bench: "roundtrip",
  curves: [],
  date: ~D[2026-11-25],
  details: nil,
  machine:
    "2 cores (AMD EPYC), 23 GiB RAM; OTP 25, Elixir 1.14.0, Python 3.11.7, wasmtime 50.0.1",
  quick: false,
  rows: [
    %{
      base: 13.956,
      baseline: "raw Port echo",
      measure: "call round trip p50 (µs)",
      target: "≤ 1.2×",
      value: 44.924
    },
    %{
      base: 89.967,
      baseline: "raw Port echo",
      measure: "call round trip p99 (µs)",
      target: "≤ 2×",
      value: 299.368
    },
    %{
      base: 196_577.970686293,
      baseline: "raw Port echo",
      measure: "pipelined casts (msgs/s)",
      target: "≥ 0.5×",
      value: 211_526.94959101264
    },
    %{
      base: 13.956,
      baseline: "raw Port echo",
      measure: "call p50, host spin off (µs)",
      target: "(info)",
      value: 46.707
    },
    %{
      base: 89.967,
      baseline: "raw Port echo",
      measure: "call p99, host spin off (µs)",
      target: "(info)",
      value: 282.717
    }
  ],
  seconds: 28.719
}
