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
      base: 18.24281185,
      baseline: "wasmtime-py, no-argument call",
      measure: "Wasm call path: Instance.call of echo.wat, small payload (µs)",
      target: "≤ 1.5×",
      value: 9.78667385
    },
    %{
      base: 18.24281185,
      baseline: "wasmtime-py, no-argument call",
      measure: "the same through wasmtime-py's public API, before tuning (µs)",
      target: "(info)",
      value: 166.502621
    },
    %{
      base: 18.24281185,
      baseline: "wasmtime-py, no-argument call",
      measure: "counter.wat: 2 imports and symbiont_state a message (µs)",
      target: "(info)",
      value: 25.85064125
    },
    %{
      base: 49.4495,
      baseline: "Python agent, same work",
      measure: "Wasm agent (counter.wat) publish → handle → ack (µs/message)",
      target: "(info)",
      value: 109.23255
    },
    %{
      base: 816.799354,
      baseline: "cold compile",
      measure: "load a 625 KB module from the cache (ms)",
      target: "≤ 0.05× (20× faster)",
      value: 6.911206
    },
    %{
      base: 132.73481,
      baseline: "wasmtime-py alone",
      measure: "instantiate counter.wat (µs)",
      target: "(info)",
      value: 222.9449825
    },
    %{
      base: 222.9449825,
      baseline: "instantiate counter.wat",
      measure: "start 10000 Wasm agents on 4 hosts in 5.8 s (µs/agent)",
      target: "(info)",
      value: 582.6356
    },
    %{
      base: 7.394,
      baseline: "bare wasmtime instance",
      measure: "10000 Wasm agents: memory each, BEAM 12.7 + hosts 34.3 (KB)",
      target: "< 256 KB",
      value: 47.045040625
    }
  ],
  seconds: 37.395
}
