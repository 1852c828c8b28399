%{
  bench: "_run",
  date: ~D[2026-11-25],
  names: ["roundtrip", "mesh", "wasm", "idle", "curves"],
  quick: false,
  seconds: 241.246
}
