%{
  bench: "roundtrip",
  curves: [],
  date: ~D[2026-12-05],
  details: nil,
  machine:
    "2 cores (AMD EPYC), 23 GiB RAM; OTP 25, Elixir 1.14.0, Python 3.11.7, wasmtime 51.0.0",
  quick: false,
  rows: [
    %{
      base: 40.841,
      baseline: "raw Port echo",
      measure: "call round trip p50 (µs)",
      target: "≤ 1.2×",
      value: 26.219
    },
    %{
      base: 76.284,
      baseline: "raw Port echo",
      measure: "call round trip p99 (µs)",
      target: "≤ 2×",
      value: 74.491
    },
    %{
      base: 745_100.9611802399,
      baseline: "raw Port echo",
      measure: "pipelined casts (msgs/s)",
      target: "≥ 0.5×",
      value: 470_172.2711201384
    },
    %{
      base: 40.841,
      baseline: "raw Port echo",
      measure: "call p50, host spin off (µs)",
      target: "(info)",
      value: 58.357
    },
    %{
      base: 76.284,
      baseline: "raw Port echo",
      measure: "call p99, host spin off (µs)",
      target: "(info)",
      value: 102.503
    }
  ],
  seconds: 16.574
}
