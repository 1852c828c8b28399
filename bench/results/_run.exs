%{
  bench: "_run",
  date: ~D[2026-12-05],
  names: ["roundtrip", "mesh", "wasm", "heal", "idle", "curves"],
  quick: false,
  seconds: 134.189
}
