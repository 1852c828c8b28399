%{
  bench: "_run",
  date: ~D[2026-12-07],
  names: ["roundtrip", "mesh", "wasm", "component", "heal", "idle", "curves"],
  quick: false,
  seconds: 341.176
}
