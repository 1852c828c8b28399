%{
  bench: "_run",
  date: ~D[2026-11-25],
  names: ["roundtrip", "mesh", "wasm", "heal", "idle", "curves"],
  quick: false,
  seconds: 216.403
}
