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
      base: 10.4442198,
      baseline: "wasmtime-py, no-argument call",
      measure: "Wasm call path: Instance.call of echo.wat, small payload (µs)",
      target: "≤ 1.5×",
      value: 5.900307649999999
    },
    %{
      base: 10.4442198,
      baseline: "wasmtime-py, no-argument call",
      measure: "the same through wasmtime-py's public API, before tuning (µs)",
      target: "(info)",
      value: 56.12241950000001
    },
    %{
      base: 10.4442198,
      baseline: "wasmtime-py, no-argument call",
      measure: "counter.wat: 2 imports and symbiont_state a message (µs)",
      target: "(info)",
      value: 15.7337301
    },
    %{
      base: 21.3431,
      baseline: "Python agent, same work",
      measure: "Wasm agent (counter.wat) publish → handle → ack (µs/message)",
      target: "(info)",
      value: 38.29505
    },
    %{
      base: 490.132209,
      baseline: "cold compile",
      measure: "load a 625 KB module from the cache (ms)",
      target: "≤ 0.05× (20× faster)",
      value: 4.979609
    },
    %{
      base: 65.80457000000001,
      baseline: "wasmtime-py alone",
      measure: "instantiate counter.wat (µs)",
      target: "(info)",
      value: 109.05551249999999
    },
    %{
      base: 109.05551249999999,
      baseline: "instantiate counter.wat",
      measure: "start 10000 Wasm agents on 4 hosts in 3.8 s (µs/agent)",
      target: "(info)",
      value: 384.6565
    },
    %{
      base: 7.386,
      baseline: "bare wasmtime instance",
      measure: "10000 Wasm agents: memory each, BEAM 10.2 + hosts 34.6 (KB)",
      target: "< 256 KB",
      value: 44.84482890625
    }
  ],
  seconds: 18.083
}
