;; A very slow version of counter.wat, for the deploy test of a canary too slow to give
;; more than a few samples in its window: counter_v2.wat (each message adds ten) that
;; also spins through 250 million iterations per message, some 150 ms here (the deploy
;; tests give it a deadline of 1 s).
(module
  (import "symbiont" "publish" (func $publish (param i32 i32 i32 i32)))
  (import "symbiont" "log" (func $log (param i32 i32 i32)))
  (import "symbiont" "health" (func $health (param i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "count.out")        ;; 9 bytes
  (data (i32.const 32) "counted")          ;; 7 bytes
  (data (i32.const 48) "degraded")         ;; 8 bytes
  (data (i32.const 64) "third message")    ;; 13 bytes
  (global $n (mut i32) (i32.const 0))

  (func (export "symbiont_abi_version") (result i32) (i32.const 1))

  (func (export "symbiont_alloc") (param $size i32) (result i32)
    (if (i32.gt_u (local.get $size) (i32.const 60000)) (then (return (i32.const 0))))
    (i32.const 1024))

  ;; Writes the msgpack encoding of $n at 256; returns its length.
  (func $encode (result i32)
    (if (i32.lt_u (global.get $n) (i32.const 128))
      (then (i32.store8 (i32.const 256) (global.get $n)) (return (i32.const 1))))
    (i32.store8 (i32.const 256) (i32.const 0xce))
    (i32.store8 (i32.const 257) (i32.shr_u (global.get $n) (i32.const 24)))
    (i32.store8 (i32.const 258) (i32.shr_u (global.get $n) (i32.const 16)))
    (i32.store8 (i32.const 259) (i32.shr_u (global.get $n) (i32.const 8)))
    (i32.store8 (i32.const 260) (global.get $n))
    (i32.const 5))

  (func $reply (param $len i32) (result i64)
    (i64.or (i64.const 1099511627776) ;; 256 << 32
            (i64.extend_i32_u (local.get $len))))

  (func (export "symbiont_handle") (param $ptr i32) (param $len i32) (result i64)
    (local $out i32)
    (local $i i32)
    (local.set $i (i32.const 250000000))
    (loop $spin
      (local.set $i (i32.sub (local.get $i) (i32.const 1)))
      (br_if $spin (i32.gt_s (local.get $i) (i32.const 0))))
    (global.set $n (i32.add (global.get $n) (i32.const 10)))
    (local.set $out (call $encode))
    (call $publish (i32.const 16) (i32.const 9) (i32.const 256) (local.get $out))
    (call $log (i32.const 1) (i32.const 32) (i32.const 7))
    (if (i32.eq (global.get $n) (i32.const 3))
      (then (call $health (i32.const 48) (i32.const 8) (i32.const 64) (i32.const 13))))
    (call $reply (local.get $out)))

  (func (export "symbiont_state") (result i64)
    (call $reply (call $encode)))

  ;; Accepts a msgpack positive fixint, uint8, uint16 or uint32.
  (func (export "symbiont_migrate") (param $ptr i32) (param $len i32)
    (local $b i32)
    (local.set $b (i32.load8_u (local.get $ptr)))
    (if (i32.lt_u (local.get $b) (i32.const 128))
      (then (global.set $n (local.get $b)) (return)))
    (if (i32.eq (local.get $b) (i32.const 0xcc))
      (then (global.set $n (i32.load8_u offset=1 (local.get $ptr))) (return)))
    (if (i32.eq (local.get $b) (i32.const 0xcd))
      (then (global.set $n
              (i32.or (i32.shl (i32.load8_u offset=1 (local.get $ptr)) (i32.const 8))
                      (i32.load8_u offset=2 (local.get $ptr))))
            (return)))
    (if (i32.ne (local.get $b) (i32.const 0xce)) (then (unreachable)))
    (global.set $n
      (i32.or (i32.or (i32.shl (i32.load8_u offset=1 (local.get $ptr)) (i32.const 24))
                      (i32.shl (i32.load8_u offset=2 (local.get $ptr)) (i32.const 16)))
              (i32.or (i32.shl (i32.load8_u offset=3 (local.get $ptr)) (i32.const 8))
                      (i32.load8_u offset=4 (local.get $ptr)))))))
