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
      base: 1_066_530.1508073632,
      baseline: "Registry.dispatch",
      measure: "local broadcast, 1 subscriber(s) (msgs/s)",
      target: "≥ 0.9×",
      value: 916_993.7277629022
    },
    %{
      base: 219_341.53670680616,
      baseline: "Registry.dispatch",
      measure: "local broadcast, 10 subscriber(s) (msgs/s)",
      target: "≥ 0.9×",
      value: 215_283.3990665312
    },
    %{
      base: 143_573.83266398017,
      baseline: "raw Port echo, 4 ports",
      measure: "publish → 4 Python agents → ack (deliveries/s)",
      target: "≥ 100k/s",
      value: 96746.27756603781
    },
    %{
      base: 71.856,
      baseline: "send/2 to the remote pid",
      measure: "cross-node publish → deliver p50 (µs)",
      target: "(info)",
      value: 82.043
    },
    %{
      base: 136.302,
      baseline: "send/2 to the remote pid",
      measure: "cross-node publish → deliver p99 (µs)",
      target: "(info)",
      value: 156.632
    }
  ],
  seconds: 58.181
}
