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
      base: 1_406_667.6044450696,
      baseline: "Registry.dispatch",
      measure: "local broadcast, 1 subscriber(s) (msgs/s)",
      target: "≥ 0.9×",
      value: 1_587_553.5799333227
    },
    %{
      base: 218_033.0799788944,
      baseline: "Registry.dispatch",
      measure: "local broadcast, 10 subscriber(s) (msgs/s)",
      target: "≥ 0.9×",
      value: 228_344.91042029165
    },
    %{
      base: 151_171.808271819,
      baseline: "raw Port echo, 4 ports",
      measure: "publish → 4 Python agents → ack (deliveries/s)",
      target: "≥ 100k/s",
      value: 135_237.29411812438
    },
    %{
      base: 58.279,
      baseline: "send/2 to the remote pid",
      measure: "cross-node publish → deliver p50 (µs)",
      target: "(info)",
      value: 68.333
    },
    %{
      base: 115.749,
      baseline: "send/2 to the remote pid",
      measure: "cross-node publish → deliver p99 (µs)",
      target: "(info)",
      value: 128.386
    }
  ],
  seconds: 48.959
}
