;; A counting relay (ABI v1, docs/WASM_ABI.md), the middle stage of the chaos test
;; (test/support/chaos.ex): each message's payload is published again, byte for byte, on
;; the topic its config names (`%{"out" => topic}`, at most 224 bytes; default
;; "relay.out"), and counted. Its state is the count, so a restarted host resumes it
;; through symbiont_state / symbiont_migrate.
(module
  (import "symbiont" "publish" (func $publish (param i32 i32 i32 i32)))
  (memory (export "memory") 1)
  ;; The output topic lives at 16, the encoded count at 256, the reply (nil) at 512, the
  ;; input at 1024.
  (data (i32.const 16) "relay.out")
  (data (i32.const 512) "\c0")
  (global $topic_len (mut i32) (i32.const 9))
  (global $n (mut i32) (i32.const 0))

  (func (export "symbiont_abi_version") (result i32) (i32.const 1))

  (func (export "symbiont_alloc") (param $size i32) (result i32)
    (if (i32.gt_u (local.get $size) (i32.const 60000)) (then (return (i32.const 0))))
    (i32.const 1024))

  ;; The header size of the msgpack str at $p (fixstr, str8 or str16); traps on another type.
  (func $str_header (param $p i32) (result i32)
    (local $b i32)
    (local.set $b (i32.load8_u (local.get $p)))
    (if (i32.eq (i32.and (local.get $b) (i32.const 0xe0)) (i32.const 0xa0))
      (then (return (i32.const 1))))
    (if (i32.eq (local.get $b) (i32.const 0xd9)) (then (return (i32.const 2))))
    (if (i32.eq (local.get $b) (i32.const 0xda)) (then (return (i32.const 3))))
    (unreachable))

  ;; The length in bytes of the msgpack str at $p.
  (func $str_len (param $p i32) (result i32)
    (local $b i32)
    (local.set $b (i32.load8_u (local.get $p)))
    (if (i32.eq (i32.and (local.get $b) (i32.const 0xe0)) (i32.const 0xa0))
      (then (return (i32.and (local.get $b) (i32.const 0x1f)))))
    (if (i32.eq (local.get $b) (i32.const 0xd9))
      (then (return (i32.load8_u offset=1 (local.get $p)))))
    (i32.or (i32.shl (i32.load8_u offset=1 (local.get $p)) (i32.const 8))
            (i32.load8_u offset=2 (local.get $p))))

  ;; The config: nil (the default topic) or a map of one entry, "out" => topic.
  (func (export "symbiont_init") (param $ptr i32) (param $len i32)
    (local $v i32) (local $from i32) (local $i i32)
    (if (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 0xc0)) (then (return)))
    (if (i32.ne (i32.load8_u (local.get $ptr)) (i32.const 0x81)) (then (unreachable)))
    ;; Past the key, to the value.
    (local.set $v (i32.add (local.get $ptr) (i32.const 1)))
    (local.set $v (i32.add (local.get $v)
                    (i32.add (call $str_header (local.get $v)) (call $str_len (local.get $v)))))
    (global.set $topic_len (call $str_len (local.get $v)))
    (if (i32.gt_u (global.get $topic_len) (i32.const 224)) (then (unreachable)))
    (local.set $from (i32.add (local.get $v) (call $str_header (local.get $v))))
    (local.set $i (i32.const 0))
    (block $done
      (loop $copy
        (br_if $done (i32.ge_u (local.get $i) (global.get $topic_len)))
        (i32.store8 offset=16 (local.get $i)
          (i32.load8_u (i32.add (local.get $from) (local.get $i))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $copy))))

  ;; The input is the msgpack array [topic, payload] (WASM_ABI.md §3): the payload follows
  ;; the topic's header and bytes.
  (func (export "symbiont_handle") (param $ptr i32) (param $len i32) (result i64)
    (local $topic i32) (local $at i32)
    (if (i32.ne (i32.load8_u (local.get $ptr)) (i32.const 0x92)) (then (unreachable)))
    (local.set $topic (i32.add (local.get $ptr) (i32.const 1)))
    (local.set $at
      (i32.add (i32.const 1)
        (i32.add (call $str_header (local.get $topic)) (call $str_len (local.get $topic)))))
    (call $publish (i32.const 16) (global.get $topic_len)
      (i32.add (local.get $ptr) (local.get $at)) (i32.sub (local.get $len) (local.get $at)))
    (global.set $n (i32.add (global.get $n) (i32.const 1)))
    (i64.or (i64.const 2199023255552) (i64.const 1)))  ;; (512 << 32) | 1: nil

  ;; The count as a msgpack uint32 at 256.
  (func (export "symbiont_state") (result i64)
    (i32.store8 (i32.const 256) (i32.const 0xce))
    (i32.store8 (i32.const 257) (i32.shr_u (global.get $n) (i32.const 24)))
    (i32.store8 (i32.const 258) (i32.shr_u (global.get $n) (i32.const 16)))
    (i32.store8 (i32.const 259) (i32.shr_u (global.get $n) (i32.const 8)))
    (i32.store8 (i32.const 260) (global.get $n))
    (i64.or (i64.const 1099511627776) (i64.const 5)))  ;; (256 << 32) | 5

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
