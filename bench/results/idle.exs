%{
  bench: "idle",
  curves: [],
  date: ~D[2026-12-07],
  details:
    "The Python agent's host has wasmtime loaded: no (`symbiont.wasm` imports it on first use). Memory from `/proc/PID/smaps_rollup`, the median of 5 samples taken 1000 ms after start.\n",
  machine:
    "2 cores (AMD EPYC), 23 GiB RAM; OTP 25, Elixir 1.14.0, Python 3.11.7, wasmtime 51.0.0",
  quick: false,
  rows: [
    %{
      base: 8.4921875,
      baseline: "bare `python -c`, idle",
      measure: "idle host, one Python agent: RSS (MB)",
      target: "< 20 MB",
      value: 17.81640625
    },
    %{
      base: 3.5625,
      baseline: "bare `python -c`, idle",
      measure: "idle host, one Python agent: PSS (MB)",
      target: "(info)",
      value: 11.8583984375
    },
    %{
      base: 33,
      baseline: "bare `python -c`, idle",
      measure: "idle host, one Python agent: modules imported",
      target: "(info)",
      value: 160
    },
    %{
      base: 8.4921875,
      baseline: "bare `python -c`, idle",
      measure: "idle host, one Wasm agent: RSS (MB)",
      target: "(info)",
      value: 34.54296875
    },
    %{
      base: 33,
      baseline: "bare `python -c`, idle",
      measure: "idle host, one Wasm agent: modules imported",
      target: "(info)",
      value: 240
    }
  ],
  seconds: 4.019
}
