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
      base: 78.637,
      baseline: "raw Port echo",
      measure: "call round trip p50 (µs)",
      target: "≤ 1.2×",
      value: 41.568
    },
    %{
      base: 161.25,
      baseline: "raw Port echo",
      measure: "call round trip p99 (µs)",
      target: "≤ 2×",
      value: 149.428
    },
    %{
      base: 204_584.7441156313,
      baseline: "raw Port echo",
      measure: "pipelined casts (msgs/s)",
      target: "≥ 0.5×",
      value: 275_607.3697410669
    },
    %{
      base: 78.637,
      baseline: "raw Port echo",
      measure: "call p50, host spin off (µs)",
      target: "(info)",
      value: 137.707
    },
    %{
      base: 161.25,
      baseline: "raw Port echo",
      measure: "call p99, host spin off (µs)",
      target: "(info)",
      value: 246.639
    }
  ],
  seconds: 35.262
}
