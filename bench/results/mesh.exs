%{
  bench: "mesh",
  curves: [],
  date: ~D[2026-12-05],
  details: nil,
  machine:
    "2 cores (AMD EPYC), 23 GiB RAM; OTP 25, Elixir 1.14.0, Python 3.11.7, wasmtime 51.0.0",
  quick: false,
  rows: [
    %{
      base: 1_976_518.9548167768,
      baseline: "Registry.dispatch",
      measure: "local broadcast, 1 subscriber(s) (msgs/s)",
      target: "≥ 0.9×",
      value: 2_519_526.3290501386
    },
    %{
      base: 320_133.1754009668,
      baseline: "Registry.dispatch",
      measure: "local broadcast, 10 subscriber(s) (msgs/s)",
      target: "≥ 0.9×",
      value: 363_707.7826191325
    },
    %{
      base: 234_056.78334592364,
      baseline: "raw Port echo, 4 ports",
      measure: "publish → 4 Python agents → ack (deliveries/s)",
      target: "≥ 100k/s",
      value: 195_130.5179251772
    },
    %{
      base: 33.434,
      baseline: "send/2 to the remote pid",
      measure: "cross-node publish → deliver p50 (µs)",
      target: "(info)",
      value: 32.854
    },
    %{
      base: 59.344,
      baseline: "send/2 to the remote pid",
      measure: "cross-node publish → deliver p99 (µs)",
      target: "(info)",
      value: 64.722
    }
  ],
  seconds: 35.035
}
