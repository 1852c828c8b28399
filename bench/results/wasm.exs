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
      base: 10.2562438,
      baseline: "wasmtime-py, no-argument call",
      measure: "Wasm call path: Instance.call of echo.wat, small payload (µs)",
      target: "≤ 1.5×",
      value: 6.8507634500000005
    },
    %{
      base: 10.2562438,
      baseline: "wasmtime-py, no-argument call",
      measure: "the same through wasmtime-py's public API, before tuning (µs)",
      target: "(info)",
      value: 57.564819
    },
    %{
      base: 10.2562438,
      baseline: "wasmtime-py, no-argument call",
      measure: "counter.wat: 2 imports and symbiont_state a message (µs)",
      target: "(info)",
      value: 18.1042368
    },
    %{
      base: 27.3842,
      baseline: "Python agent, same work",
      measure: "Wasm agent (counter.wat) publish → handle → ack (µs/message)",
      target: "(info)",
      value: 53.0998
    },
    %{
      base: 507.885027,
      baseline: "cold compile",
      measure: "load a 625 KB module from the cache (ms)",
      target: "≤ 0.05× (20× faster)",
      value: 3.854169
    },
    %{
      base: 74.7017425,
      baseline: "wasmtime-py alone",
      measure: "instantiate counter.wat (µs)",
      target: "(info)",
      value: 97.27753750000001
    },
    %{
      base: 97.27753750000001,
      baseline: "instantiate counter.wat",
      measure: "start 10000 Wasm agents on 4 hosts in 3.7 s (µs/agent)",
      target: "(info)",
      value: 366.5098
    },
    %{
      base: 5.228,
      baseline: "bare wasmtime instance",
      measure: "10000 Wasm agents: memory each, BEAM 14.4 + hosts 36.7 (KB)",
      target: "< 256 KB",
      value: 51.09507578125
    },
    %{
      base: 5.228,
      baseline: "bare wasmtime instance",
      measure: "the same, idle 3 s: BEAM 9.1 + hosts 36.7 (KB)",
      target: "< 256 KB",
      value: 45.74622421875
    }
  ],
  seconds: 23.299
}
