;; The smallest Symbiont module (ABI v1, docs/WASM_ABI.md): it answers each message with
;; the message itself, the msgpack array [topic, payload].
(module
  (memory (export "memory") 1)

  (func (export "symbiont_abi_version") (result i32) (i32.const 1))

  ;; One buffer at 1024, grown to fit: each call's input is written there.
  (func (export "symbiont_alloc") (param $size i32) (result i32)
    (local $need i32)
    (local.set $need
      (i32.sub
        (i32.shr_u (i32.add (i32.add (local.get $size) (i32.const 1024)) (i32.const 65535))
                   (i32.const 16))
        (memory.size)))
    (if (i32.gt_s (local.get $need) (i32.const 0))
      (then (if (i32.lt_s (memory.grow (local.get $need)) (i32.const 0))
              (then (return (i32.const 0))))))
    (i32.const 1024))

  ;; Reply (ptr << 32 | len) = the input.
  (func (export "symbiont_handle") (param $ptr i32) (param $len i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
            (i64.extend_i32_u (local.get $len)))))
