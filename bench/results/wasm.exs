%{
  bench: "wasm",
  curves: [],
  date: ~D[2026-11-25],
  details: nil,
  machine:
    "2 cores (AMD EPYC), 23 GiB RAM; OTP 25, Elixir 1.14.0, Python 3.11.7, wasmtime 50.0.1",
  quick: false,
  rows: [
    %{
      base: 19.3785741,
      baseline: "wasmtime-py, no-argument call",
      measure: "Wasm call path: Instance.call of echo.wat, small payload (µs)",
      target: "≤ 1.5×",
      value: 13.5163715
    },
    %{
      base: 19.3785741,
      baseline: "wasmtime-py, no-argument call",
      measure: "the same through wasmtime-py's public API, before tuning (µs)",
      target: "(info)",
      value: 122.0379565
    },
    %{
      base: 19.3785741,
      baseline: "wasmtime-py, no-argument call",
      measure: "counter.wat: 2 imports and symbiont_state a message (µs)",
      target: "(info)",
      value: 26.789019250000003
    },
    %{
      base: 126.12715,
      baseline: "Python agent, same work",
      measure: "Wasm agent (counter.wat) publish → handle → ack (µs/message)",
      target: "(info)",
      value: 282.8737
    },
    %{
      base: 888.433705,
      baseline: "cold compile",
      measure: "load a 625 KB module from the cache (ms)",
      target: "≤ 0.05× (20× faster)",
      value: 7.086473
    },
    %{
      base: 147.279255,
      baseline: "wasmtime-py alone",
      measure: "instantiate counter.wat (µs)",
      target: "(info)",
      value: 208.9680725
    },
    %{
      base: 208.9680725,
      baseline: "instantiate counter.wat",
      measure: "start 10000 Wasm agents on 4 hosts in 9.5 s (µs/agent)",
      target: "(info)",
      value: 954.2052
    },
    %{
      base: 7.34,
      baseline: "bare wasmtime instance",
      measure: "10000 Wasm agents: memory each, BEAM 11.9 + hosts 34.2 (KB)",
      target: "< 256 KB",
      value: 46.072015625
    }
  ],
  seconds: 57.668
}
