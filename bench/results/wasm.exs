%{
  bench: "wasm",
  curves: [],
  date: ~D[2026-12-05],
  details: nil,
  machine:
    "2 cores (AMD EPYC), 23 GiB RAM; OTP 25, Elixir 1.14.0, Python 3.11.7, wasmtime 51.0.0",
  quick: false,
  rows: [
    %{
      base: 10.38539265,
      baseline: "wasmtime-py, no-argument call",
      measure: "Wasm call path: Instance.call of echo.wat, small payload (µs)",
      target: "≤ 1.5×",
      value: 5.95299515
    },
    %{
      base: 10.38539265,
      baseline: "wasmtime-py, no-argument call",
      measure: "the same through wasmtime-py's public API, before tuning (µs)",
      target: "(info)",
      value: 55.746644
    },
    %{
      base: 10.38539265,
      baseline: "wasmtime-py, no-argument call",
      measure: "counter.wat: 2 imports and symbiont_state a message (µs)",
      target: "(info)",
      value: 15.430926750000001
    },
    %{
      base: 20.19335,
      baseline: "Python agent, same work",
      measure: "Wasm agent (counter.wat) publish → handle → ack (µs/message)",
      target: "(info)",
      value: 40.93645
    },
    %{
      base: 516.889696,
      baseline: "cold compile",
      measure: "load a 625 KB module from the cache (ms)",
      target: "≤ 0.05× (20× faster)",
      value: 5.799491
    },
    %{
      base: 69.6793925,
      baseline: "wasmtime-py alone",
      measure: "instantiate counter.wat (µs)",
      target: "(info)",
      value: 113.483685
    },
    %{
      base: 113.483685,
      baseline: "instantiate counter.wat",
      measure: "start 10000 Wasm agents on 4 hosts in 3.3 s (µs/agent)",
      target: "(info)",
      value: 329.6499
    },
    %{
      base: 7.41,
      baseline: "bare wasmtime instance",
      measure: "10000 Wasm agents: memory each, BEAM 9.4 + hosts 34.5 (KB)",
      target: "< 256 KB",
      value: 43.92515
    }
  ],
  seconds: 19.213
}
