;; Asks WASI for random bytes: allowed only when the manifest grants "random". It replies
;; with 8 random bytes as a msgpack bin.
(module
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "symbiont_abi_version") (result i32) (i32.const 1))
  (func (export "symbiont_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "symbiont_handle") (param i32 i32) (result i64)
    ;; bin8 header c4 08 at 512, then 8 random bytes at 514
    (i32.store8 (i32.const 512) (i32.const 0xc4))
    (i32.store8 (i32.const 513) (i32.const 8))
    (drop (call $random_get (i32.const 514) (i32.const 8)))
    (i64.or (i64.shl (i64.const 512) (i64.const 32)) (i64.const 10))))
