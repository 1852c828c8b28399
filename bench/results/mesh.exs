%{
  bench: "mesh",
  curves: [],
  date: ~D[2026-11-25],
  details: nil,
  machine:
    "2 cores (AMD EPYC), 23 GiB RAM; OTP 25, Elixir 1.14.0, Python 3.11.7, wasmtime 50.0.1",
  quick: false,
  rows: [
    %{
      base: 1_203_398.397073335,
      baseline: "Registry.dispatch",
      measure: "local broadcast, 1 subscriber(s) (msgs/s)",
      target: "≥ 0.9×",
      value: 970_026.1907071491
    },
    %{
      base: 176_357.51194822145,
      baseline: "Registry.dispatch",
      measure: "local broadcast, 10 subscriber(s) (msgs/s)",
      target: "≥ 0.9×",
      value: 184_023.11330303087
    },
    %{
      base: 123_983.68250754518,
      baseline: "raw Port echo, 4 ports",
      measure: "publish → 4 Python agents → ack (deliveries/s)",
      target: "≥ 100k/s",
      value: 73267.10475510836
    },
    %{
      base: 20.949,
      baseline: "send/2 to the remote pid",
      measure: "cross-node publish → deliver p50 (µs)",
      target: "(info)",
      value: 29.595
    },
    %{
      base: 92.593,
      baseline: "send/2 to the remote pid",
      measure: "cross-node publish → deliver p99 (µs)",
      target: "(info)",
      value: 97.913
    }
  ],
  seconds: 70.234
}
