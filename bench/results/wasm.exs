%{
  bench: "wasm",
  curves: [],
  date: ~D[2026-12-07],
  details: nil,
  machine:
    "2 cores (AMD EPYC), 23 GiB RAM; OTP 25, Elixir 1.14.0, Python 3.11.7, wasmtime 51.0.0",
  quick: false,
  rows: [
    %{
      base: 10.46015995,
      baseline: "wasmtime-py, no-argument call",
      measure: "Wasm call path: Instance.call of echo.wat, small payload (µs)",
      target: "≤ 1.5×",
      value: 6.92112475
    },
    %{
      base: 10.46015995,
      baseline: "wasmtime-py, no-argument call",
      measure: "the same through wasmtime-py's public API, before tuning (µs)",
      target: "(info)",
      value: 59.411644
    },
    %{
      base: 10.46015995,
      baseline: "wasmtime-py, no-argument call",
      measure: "counter.wat: 2 imports and symbiont_state a message (µs)",
      target: "(info)",
      value: 18.8741128
    },
    %{
      base: 33.53445,
      baseline: "Python agent, same work",
      measure: "Wasm agent (counter.wat) publish → handle → ack (µs/message)",
      target: "(info)",
      value: 57.6046
    },
    %{
      base: 557.237161,
      baseline: "cold compile",
      measure: "load a 625 KB module from the cache (ms)",
      target: "≤ 0.05× (20× faster)",
      value: 3.783705
    },
    %{
      base: 67.58179,
      baseline: "wasmtime-py alone",
      measure: "instantiate counter.wat (µs)",
      target: "(info)",
      value: 98.2651325
    },
    %{
      base: 98.2651325,
      baseline: "instantiate counter.wat",
      measure: "start 10000 Wasm agents on 4 hosts in 4.9 s (µs/agent)",
      target: "(info)",
      value: 491.2397
    },
    %{
      base: 5.55,
      baseline: "bare wasmtime instance",
      measure: "10000 Wasm agents: memory each, BEAM 14.3 + hosts 38.0 (KB)",
      target: "< 256 KB",
      value: 52.352146093749994
    }
  ],
  seconds: 23.252
}
