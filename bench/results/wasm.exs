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
      base: 14.886072749999999,
      baseline: "wasmtime-py, no-argument call",
      measure: "Wasm call path: Instance.call of echo.wat, small payload (µs)",
      target: "≤ 1.5×",
      value: 8.52658995
    },
    %{
      base: 14.886072749999999,
      baseline: "wasmtime-py, no-argument call",
      measure: "the same through wasmtime-py's public API, before tuning (µs)",
      target: "(info)",
      value: 102.4359985
    },
    %{
      base: 14.886072749999999,
      baseline: "wasmtime-py, no-argument call",
      measure: "counter.wat: 2 imports and symbiont_state a message (µs)",
      target: "(info)",
      value: 23.4684041
    },
    %{
      base: 34.54475,
      baseline: "Python agent, same work",
      measure: "Wasm agent (counter.wat) publish → handle → ack (µs/message)",
      target: "(info)",
      value: 83.3996
    },
    %{
      base: 708.552565,
      baseline: "cold compile",
      measure: "load a 625 KB module from the cache (ms)",
      target: "≤ 0.05× (20× faster)",
      value: 6.165305
    },
    %{
      base: 123.7304975,
      baseline: "wasmtime-py alone",
      measure: "instantiate counter.wat (µs)",
      target: "(info)",
      value: 192.81445499999998
    },
    %{
      base: 192.81445499999998,
      baseline: "instantiate counter.wat",
      measure: "start 10000 Wasm agents on 4 hosts in 4.9 s (µs/agent)",
      target: "(info)",
      value: 490.1525
    },
    %{
      base: 7.37,
      baseline: "bare wasmtime instance",
      measure: "10000 Wasm agents: memory each, BEAM 9.1 + hosts 34.4 (KB)",
      target: "< 256 KB",
      value: 43.471624218749994
    }
  ],
  seconds: 29.821
}
