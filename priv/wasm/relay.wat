;; A pipeline stage for the chaos test: each message's payload is published again, byte for
;; byte, on `chaos.relayed`. The input is the msgpack array [topic, payload] (WASM_ABI.md
;; §3): the payload follows the topic's str header and bytes.
(module
  (import "symbiont" "publish" (func $publish (param i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "chaos.relayed")    ;; 13 bytes

  (func (export "symbiont_abi_version") (result i32) (i32.const 1))

  (func (export "symbiont_alloc") (param $size i32) (result i32)
    (if (i32.gt_u (local.get $size) (i32.const 60000)) (then (return (i32.const 0))))
    (i32.const 1024))

  (func (export "symbiont_handle") (param $ptr i32) (param $len i32) (result i64)
    (local $b i32) (local $at i32)
    ;; $ptr: 0x92, then the topic: fixstr (0xa0-0xbf), str8 (0xd9) or str16 (0xda).
    (local.set $b (i32.load8_u offset=1 (local.get $ptr)))
    (if (i32.eq (i32.and (local.get $b) (i32.const 0xe0)) (i32.const 0xa0))
      (then (local.set $at (i32.add (i32.const 2) (i32.and (local.get $b) (i32.const 0x1f)))))
      (else
        (if (i32.eq (local.get $b) (i32.const 0xd9))
          (then (local.set $at (i32.add (i32.const 3) (i32.load8_u offset=2 (local.get $ptr)))))
          (else
            (if (i32.ne (local.get $b) (i32.const 0xda)) (then (unreachable)))
            (local.set $at
              (i32.add (i32.const 4)
                (i32.or (i32.shl (i32.load8_u offset=2 (local.get $ptr)) (i32.const 8))
                        (i32.load8_u offset=3 (local.get $ptr)))))))))
    (call $publish (i32.const 16) (i32.const 13)
      (i32.add (local.get $ptr) (local.get $at)) (i32.sub (local.get $len) (local.get $at)))
    (i64.const 0)))
