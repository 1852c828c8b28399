%{
  bench: "mesh",
  curves: [],
  date: ~D[2026-12-07],
  details: nil,
  machine:
    "2 cores (AMD EPYC), 23 GiB RAM; OTP 25, Elixir 1.14.0, Python 3.11.7, wasmtime 51.0.0",
  quick: false,
  rows: [
    %{
      base: 1_594_031.944400166,
      baseline: "Registry.dispatch",
      measure: "local broadcast, 1 subscriber(s) (msgs/s)",
      target: "≥ 0.9×",
      value: 2_092_925.910422771
    },
    %{
      base: 310_219.8838536755,
      baseline: "Registry.dispatch",
      measure: "local broadcast, 10 subscriber(s) (msgs/s)",
      target: "≥ 0.9×",
      value: 354_537.01011848624
    },
    %{
      base: 198_350.41874252775,
      baseline: "raw Port echo, 4 ports",
      measure: "publish → 4 Python agents → ack (deliveries/s)",
      target: "≥ 100k/s",
      value: 128_016.42706792135
    },
    %{
      base: 38.598,
      baseline: "send/2 to the remote pid",
      measure: "cross-node publish → deliver p50 (µs)",
      target: "(info)",
      value: 33.786
    },
    %{
      base: 87.085,
      baseline: "send/2 to the remote pid",
      measure: "cross-node publish → deliver p99 (µs)",
      target: "(info)",
      value: 77.997
    }
  ],
  seconds: 39.839
}
