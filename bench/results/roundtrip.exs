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
      base: 75.671,
      baseline: "raw Port echo",
      measure: "call round trip p50 (µs)",
      target: "≤ 1.2×",
      value: 50.003
    },
    %{
      base: 157.604,
      baseline: "raw Port echo",
      measure: "call round trip p99 (µs)",
      target: "≤ 2×",
      value: 167.422
    },
    %{
      base: 268_092.2022702047,
      baseline: "raw Port echo",
      measure: "pipelined casts (msgs/s)",
      target: "≥ 0.5×",
      value: 254_620.72969208716
    },
    %{
      base: 75.671,
      baseline: "raw Port echo",
      measure: "call p50, host spin off (µs)",
      target: "(info)",
      value: 141.123
    },
    %{
      base: 157.604,
      baseline: "raw Port echo",
      measure: "call p99, host spin off (µs)",
      target: "(info)",
      value: 229.788
    }
  ],
  seconds: 35.368
}
