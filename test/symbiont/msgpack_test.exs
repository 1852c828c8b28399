defmodule Symbiont.MsgPackTest do
  use ExUnit.Case, async: true
  import Bitwise

  alias Symbiont.MsgPack
  alias Symbiont.MsgPack.{Bin, Ext, Timestamp}
  import Symbiont.MsgPackGen, only: [gen: 1, mutate: 1, random_bytes: 1]

  doctest MsgPack
  doctest Bin
  doctest Ext
  doctest Timestamp
  doctest Symbiont.MsgPack.Raw
  doctest Symbiont.MsgPack.Encoder
  doctest Symbiont.MsgPack.Decoder

  defp bin!(term), do: MsgPack.encode!(term, iodata: false)
  defp roundtrip(term), do: MsgPack.decode!(bin!(term))

  describe "shortest form" do
    # {value, first byte, total size}
    @ints [
      {0, 0x00, 1},
      {127, 0x7F, 1},
      {128, 0xCC, 2},
      {255, 0xCC, 2},
      {256, 0xCD, 3},
      {65_535, 0xCD, 3},
      {65_536, 0xCE, 5},
      {4_294_967_295, 0xCE, 5},
      {4_294_967_296, 0xCF, 9},
      {18_446_744_073_709_551_615, 0xCF, 9},
      {-1, 0xFF, 1},
      {-32, 0xE0, 1},
      {-33, 0xD0, 2},
      {-128, 0xD0, 2},
      {-129, 0xD1, 3},
      {-32_768, 0xD1, 3},
      {-32_769, 0xD2, 5},
      {-2_147_483_648, 0xD2, 5},
      {-2_147_483_649, 0xD3, 9},
      {-9_223_372_036_854_775_808, 0xD3, 9}
    ]

    test "integers at every width boundary" do
      for {n, first, size} <- @ints do
        assert <<^first, _::binary>> = encoded = bin!(n), "#{n}"
        assert byte_size(encoded) == size, "#{n}"
        assert MsgPack.decode(encoded) == {:ok, n}
      end
    end

    test "integers out of range are refused" do
      assert MsgPack.encode(18_446_744_073_709_551_616) ==
               {:error, {:integer_out_of_range, 18_446_744_073_709_551_616}}

      assert {:error, {:integer_out_of_range, _}} = MsgPack.encode(-9_223_372_036_854_775_809)
      assert_raise ArgumentError, ~r/outside -2\^63..2\^64-1/, fn -> MsgPack.encode!(1 <<< 70) end
    end

    test "str, bin, array and map size classes" do
      for {n, str_hdr, bin_hdr, arr_hdr, map_hdr} <- [
            {0, <<0xA0>>, <<0xC4, 0>>, <<0x90>>, <<0x80>>},
            {15, <<0xAF>>, <<0xC4, 15>>, <<0x9F>>, <<0x8F>>},
            {16, <<0xB0>>, <<0xC4, 16>>, <<0xDC, 16::16>>, <<0xDE, 16::16>>},
            {31, <<0xBF>>, <<0xC4, 31>>, <<0xDC, 31::16>>, <<0xDE, 31::16>>},
            {32, <<0xD9, 32>>, <<0xC4, 32>>, <<0xDC, 32::16>>, <<0xDE, 32::16>>},
            {255, <<0xD9, 255>>, <<0xC4, 255>>, <<0xDC, 255::16>>, <<0xDE, 255::16>>},
            {256, <<0xDA, 256::16>>, <<0xC5, 256::16>>, <<0xDC, 256::16>>, <<0xDE, 256::16>>},
            {65_535, <<0xDA, 65_535::16>>, <<0xC5, 65_535::16>>, <<0xDC, 65_535::16>>,
             <<0xDE, 65_535::16>>},
            {65_536, <<0xDB, 65_536::32>>, <<0xC6, 65_536::32>>, <<0xDD, 65_536::32>>,
             <<0xDF, 65_536::32>>}
          ] do
        str = String.duplicate("a", n)
        bin = %Bin{data: str}
        list = List.duplicate(nil, n)
        map = Map.new(1..n//1, &{&1, nil})

        for {value, hdr} <- [{str, str_hdr}, {bin, bin_hdr}, {list, arr_hdr}, {map, map_hdr}] do
          encoded = bin!(value)
          assert binary_part(encoded, 0, byte_size(hdr)) == hdr, "#{inspect(hdr)} for #{n}"
          expected = if match?(%Bin{}, value), do: str, else: value
          assert MsgPack.decode(encoded) == {:ok, expected}
        end
      end
    end

    test "binaries that are not UTF-8 go as bin" do
      assert bin!(<<0xFF, 0>>) == <<0xC4, 2, 0xFF, 0>>
      assert roundtrip(<<0xFF, 0>>) == <<0xFF, 0>>
    end

    test "str or bin: the UTF-8 check agrees with String.valid?/1" do
      Symbiont.MsgPackGen.seed!(20_251_125)
      # Pieces near the edges of UTF-8: code points at the limits of each length,
      # surrogates, overlong forms, stray continuation bytes, truncated sequences.
      pieces =
        Enum.map(
          [0, 0x7F, 0x80, 0x7FF, 0x800, 0xD7FF, 0xE000, 0xFFFF, 0x10000, 0x10FFFF],
          &<<&1::utf8>>
        ) ++
          [<<0xED, 0xA0, 0x80>>, <<0xED, 0xBF, 0xBF>>, <<0xC0, 0x80>>, <<0xC1, 0xBF>>] ++
          [<<0xE0, 0x80, 0x80>>, <<0xF0, 0x80, 0x80, 0x80>>, <<0xF4, 0x90, 0x80, 0x80>>] ++
          [<<0x80>>, <<0xBF>>, <<0xE2, 0x82>>, <<0xF0, 0x9F, 0x98>>, <<0xFE>>, <<0xFF>>, "a"]

      for _ <- 1..20_000 do
        b =
          for _ <- 1..:rand.uniform(6), into: <<>> do
            if :rand.uniform(4) == 1,
              do: random_bytes(:rand.uniform(3)),
              else: Enum.random(pieces)
          end

        assert MsgPack.utf8?(b) == String.valid?(b), "#{inspect(b)}"
        assert match?(<<0xC4, _::binary>>, bin!(b)) == not String.valid?(b)
      end
    end

    test "ext and fixext sizes" do
      for {size, hdr} <- [
            {1, <<0xD4, 9>>},
            {2, <<0xD5, 9>>},
            {4, <<0xD6, 9>>},
            {8, <<0xD7, 9>>},
            {16, <<0xD8, 9>>},
            {0, <<0xC7, 0, 9>>},
            {3, <<0xC7, 3, 9>>},
            {17, <<0xC7, 17, 9>>},
            {256, <<0xC8, 256::16, 9>>},
            {65_536, <<0xC9, 65_536::32, 9>>}
          ] do
        ext = %Ext{type: 9, data: :binary.copy(<<7>>, size)}
        encoded = bin!(ext)
        assert binary_part(encoded, 0, byte_size(hdr)) == hdr
        assert MsgPack.decode(encoded) == {:ok, ext}
      end

      assert roundtrip(%Ext{type: -128, data: "x"}) == %Ext{type: -128, data: "x"}
    end

    test "floats: float64 out, float32 and float64 in, NaN and infinities as atoms" do
      assert bin!(1.5) == <<0xCB, 1.5::float-64>>
      assert MsgPack.decode(<<0xCA, 1.5::float-32>>) == {:ok, 1.5}
      assert roundtrip(-0.0) === -0.0

      for special <- [:NaN, :"+Infinity", :"-Infinity"] do
        assert <<0xCB, _::64>> = bin!(special)
        assert roundtrip(special) == special
      end

      assert MsgPack.decode(<<0xCA, 0x7F800000::32>>) == {:ok, :"+Infinity"}
      assert MsgPack.decode(<<0xCA, 0xFFC00000::32>>) == {:ok, :NaN}
    end
  end

  describe "Erlang terms and timestamps" do
    test "atoms, tuples, pids, refs, ports and funs survive a round trip" do
      port = Port.open({:spawn, "true"}, [])
      fun = &Enum.map/2

      for term <- [:ok, :"with space", {}, {1, {:a, "b"}, [2]}, self(), make_ref(), port, fun] do
        assert roundtrip(term) == term
      end
    end

    test "nil and booleans are not ext atoms" do
      assert bin!([nil, true, false]) == <<0x93, 0xC0, 0xC3, 0xC2>>
    end

    test "an atom that does not exist on the node decodes as a string" do
      name = "symbiont_never_created_#{System.unique_integer([:positive])}"
      assert MsgPack.decode(<<0xC7, byte_size(name), 1, name::binary>>) == {:ok, name}
    end

    test "timestamps in 32, 64 and 96 bits" do
      {:ok, t32, 0} = DateTime.from_iso8601("2026-11-24T10:00:00Z")
      assert <<0xD6, 0xFF, _::32>> = bin!(t32)
      assert roundtrip(t32) == t32

      t64 = DateTime.add(t32, 123_456, :microsecond)
      assert <<0xD7, 0xFF, _::64>> = bin!(t64)
      assert DateTime.compare(roundtrip(t64), t64) == :eq

      {:ok, t96, 0} = DateTime.from_iso8601("1900-01-01T00:00:00Z")
      assert <<0xC7, 12, 0xFF, _::96>> = bin!(t96)
      assert roundtrip(t96) == t96

      ts = %Timestamp{seconds: 1, nanoseconds: 1}
      assert roundtrip(ts) == ts
      far = %Timestamp{seconds: 1 <<< 40, nanoseconds: 0}
      assert roundtrip(far) == far
    end

    test "a Symbiont.Error goes as the map of its fields" do
      error = Symbiont.Error.new(:not_found, "no agent", agent: "a")

      assert roundtrip(error) == %{
               "reason" => :not_found,
               "message" => "no agent",
               "details" => %{agent: "a"}
             }
    end

    test "other structs, improper lists and out-of-range ext types are refused" do
      assert MsgPack.encode(%URI{}) == {:error, {:unencodable, %URI{}}}
      assert {:error, {:unencodable, _}} = MsgPack.encode([1 | 2])
      assert {:error, {:unencodable, _}} = MsgPack.encode(%Ext{type: 300, data: ""})
      assert_raise ArgumentError, ~r/no msgpack form/, fn -> MsgPack.encode!(%URI{}) end
    end
  end

  describe "untrusted input" do
    test "claims larger than the input fail fast, without allocating" do
      for {bytes, what} <- [
            {<<0xDB, 0xFFFFFFFF::32>>, :str},
            {<<0xC6, 0xFFFFFFFF::32>>, :bin},
            {<<0xDD, 0xFFFFFFFF::32, 0xC0>>, :array},
            {<<0xDF, 0xFFFFFFFF::32, 0xC0, 0xC0>>, :map},
            {<<0xC9, 0xFFFFFFFF::32, 7>>, :ext}
          ] do
        # In a process with a small heap limit: one that built what is claimed (four
        # billion elements) would be killed long before it found the input short.
        parent = self()

        {pid, ref} =
          :erlang.spawn_opt(fn -> send(parent, {:decoded, MsgPack.decode(bytes)}) end, [
            :monitor,
            max_heap_size: %{size: 100_000, kill: true, error_logger: false}
          ])

        assert_receive {:decoded, result}, 5_000
        assert result == {:error, {:truncated, what}}
        assert_receive {:DOWN, ^ref, :process, ^pid, :normal}
      end
    end

    test "reserved byte, trailing bytes, empty input, non-binaries" do
      assert MsgPack.decode(<<0xC1>>) == {:error, {:invalid_byte, 0xC1}}
      assert MsgPack.decode(<<1, 2>>) == {:error, {:trailing_bytes, 1}}
      assert MsgPack.decode(<<>>) == {:error, {:truncated, :value}}
      assert MsgPack.decode(:nope) == {:error, :not_a_binary}

      assert_raise ArgumentError, ~r/invalid msgpack: 1 trailing byte/, fn ->
        MsgPack.decode!(<<1, 2>>)
      end
    end

    test "nesting deeper than 1024 levels is refused, 1024 is fine" do
      deep = fn n -> :binary.copy(<<0x91>>, n) <> <<0xC0>> end
      assert {:ok, _} = MsgPack.decode(deep.(1024))
      assert MsgPack.decode(deep.(1025)) == {:error, {:too_deep, 1024}}
    end

    test "bad ext payloads" do
      assert {:error, {:invalid_ext, 3, _}} = MsgPack.decode(<<0xD4, 3, 0>>)
      ref_as_pid = :erlang.term_to_binary(make_ref())
      assert {:error, {:invalid_ext, 3, "expected a pid"}} = MsgPack.decode(ext(3, ref_as_pid))
      zipped = :erlang.term_to_binary(List.duplicate(self(), 50), [:compressed])
      assert <<131, 80, _::binary>> = zipped
      assert {:error, {:invalid_ext, 3, "compressed" <> _}} = MsgPack.decode(ext(3, zipped))
      assert {:error, {:invalid_ext, 2, _}} = MsgPack.decode(ext(2, <<0xC0>>))
      assert {:error, {:invalid_ext, -1, _}} = MsgPack.decode(ext(-1, <<1, 2, 3>>))

      assert {:error, {:invalid_ext, -1, _}} =
               MsgPack.decode(<<0xD7, 0xFF, 0xFFFFFFFF::32, 0::32>>)

      assert {:error, {:invalid_ext, 1, _}} = MsgPack.decode(ext(1, <<0xFF>>))
    end

    test "every truncation of a valid encoding is an error, never a crash" do
      value = [1, -300, "héllo", %{"k" => [1.5, nil]}, {:ok, self()}, <<0xFF>>, 1 <<< 40]
      encoded = bin!(value)

      for n <- 0..(byte_size(encoded) - 1) do
        assert {:error, _} = MsgPack.decode(binary_part(encoded, 0, n))
      end
    end

    test "10,000 random and 10,000 mutated inputs never raise (seeded)" do
      :rand.seed(:exsss, {20, 26, 11})
      valid = bin!([%{"a" => [1, 2.5, "x"], "b" => {:ok, -7}}, <<0xFF, 1>>, make_ref(), nil])

      for _ <- 1..10_000 do
        random = random_bytes(:rand.uniform(40))
        assert decodes_or_errors(random)
        assert decodes_or_errors(mutate(valid))
      end
    end
  end

  describe "decoding within limits (decode/2)" do
    # Every value counts: scalars, arrays, maps, each key, an ext tuple and its array.
    defp values(list) when is_list(list), do: 1 + Enum.sum(Enum.map(list, &values/1))

    defp values(map) when is_map(map) and not is_struct(map),
      do: 1 + Enum.sum(Enum.map(map, fn {k, v} -> values(k) + values(v) end))

    defp values(tuple) when is_tuple(tuple), do: 1 + values(Tuple.to_list(tuple))
    defp values(_scalar), do: 1

    test "2,000 random values: decoded at exactly their count of values, refused one below (seeded)" do
      :rand.seed(:exsss, {9, 9, 9})

      for _ <- 1..2_000 do
        value = gen(0)
        bin = bin!(value)
        n = values(value)

        assert MsgPack.decode(bin, max_values: n, max_bytes: byte_size(bin)) ==
                 MsgPack.decode(bin)

        assert MsgPack.decode(bin, max_values: n - 1) == {:error, {:over_limit, :values, n - 1}},
               "#{inspect(value)} counted otherwise than #{n}"

        if byte_size(bin) > 0,
          do:
            assert(
              MsgPack.decode(bin, max_bytes: byte_size(bin) - 1) ==
                {:error, {:over_limit, :bytes, byte_size(bin), byte_size(bin) - 1}}
            )
      end
    end

    test "10 MB of values is refused before anything is built" do
      # 10 million nils in an array: decode/1 builds a list of 160 MB of it.
      n = 10_000_000
      bin = <<0xDD, n::32>> <> :binary.copy(<<0xC0>>, n)
      {:total_heap_size, before} = Process.info(self(), :total_heap_size)

      assert MsgPack.decode(bin, max_values: 4096) == {:error, {:over_limit, :values, 4096}}

      assert MsgPack.decode(bin, max_bytes: 65_536) ==
               {:error, {:over_limit, :bytes, n + 5, 65_536}}

      {:total_heap_size, later} = Process.info(self(), :total_heap_size)
      assert later - before < 100_000, "the heap grew by #{later - before} words"
      assert MsgPack.format_error({:over_limit, :values, 4096}) =~ "more than 4096 values"
    end

    test "10,000 random and mutated inputs never raise, whatever the limits (seeded)" do
      :rand.seed(:exsss, {7, 1, 3})
      valid = bin!([%{"a" => [1, 2.5, "x"], "b" => {:ok, -7}}, <<0xFF, 1>>, make_ref(), nil])

      for _ <- 1..10_000, input <- [random_bytes(:rand.uniform(40)), mutate(valid)] do
        limit = :rand.uniform(20) - 1

        case MsgPack.decode(input, max_values: limit, max_bytes: 64) do
          {:ok, _} -> :ok
          {:error, reason} -> assert is_binary(MsgPack.format_error(reason))
        end
      end
    end
  end

  describe "cross-checked against Python's msgpack" do
    @describetag :python
    @tag :tmp_dir
    test "Python decodes what we encode and re-encodes it byte for byte", %{tmp_dir: dir} do
      :rand.seed(:exsss, {1, 2, 3})
      values = edge_values() ++ for(_ <- 1..2_000, do: gen(0))
      frames = Enum.map(values, &bin!/1)
      recoded = python_recode(frames, dir)

      for {value, frame, back} <- Enum.zip([values, frames, recoded]) do
        refute match?("!" <> _, back), "Python refused #{inspect(value)}: #{back}"
        assert back == frame, "#{inspect(value)} came back as #{inspect(MsgPack.decode(back))}"
      end
    end

    @tag :tmp_dir
    test "we decode what Python encodes and re-encode it byte for byte", %{tmp_dir: dir} do
      out = Path.join(dir, "python.bin")
      run_python!(["generate", "42", "2000", out])
      frames = read_frames(File.read!(out))
      assert length(frames) > 2_000

      for frame <- frames do
        assert {:ok, value} = MsgPack.decode(frame)
        assert bin!(value) == frame, "#{inspect(value)} from #{inspect(frame, limit: 20)}"
      end
    end
  end

  ## Helpers

  defp ext(type, data), do: bin!(%Ext{type: type, data: data})

  defp decodes_or_errors(bytes) do
    match?({:ok, _}, MsgPack.decode(bytes)) or match?({:error, _}, MsgPack.decode(bytes))
  end

  defp edge_values do
    {:ok, t, 0} = DateTime.from_iso8601("2026-11-24T10:00:00Z")
    ints = [0, 127, 128, 255, 256, 65_535, 65_536, 4_294_967_295, 4_294_967_296]
    ints = ints ++ [18_446_744_073_709_551_615, -1, -32, -33, -128, -129, -32_768, -32_769]
    ints = ints ++ [-2_147_483_648, -2_147_483_649, -9_223_372_036_854_775_808]
    sizes = [0, 1, 15, 16, 31, 32, 255, 256, 65_535, 65_536]

    ints ++
      Enum.flat_map(sizes, fn n ->
        [
          String.duplicate("é", div(n, 2)),
          <<0xFF>> <> :binary.copy(<<0>>, n),
          List.duplicate(1, n)
        ]
      end) ++
      [Map.new(1..17, &{"k#{&1}", &1}), :NaN, :"+Infinity", :"-Infinity", 1.0e300, -0.0, t] ++
      [
        DateTime.add(t, 1, :microsecond),
        {:a, {}},
        :ok,
        :infinity,
        self(),
        make_ref(),
        %Ext{type: 42, data: "12345678"}
      ]
  end

  defp python_recode(frames, dir) do
    input = Path.join(dir, "elixir.bin")
    output = Path.join(dir, "recoded.bin")
    File.write!(input, Enum.map(frames, &[<<byte_size(&1)::32>>, &1]))
    run_python!(["recode", input, output])
    read_frames(File.read!(output))
  end

  defp run_python!(args) do
    {:ok, python} = Symbiont.Config.python_executable()
    script = Path.join(Symbiont.HostHelpers.fixtures(), "msgpack_crosscheck.py")
    env = [{"PYTHONPATH", Symbiont.Config.python_src()}]
    {out, status} = System.cmd(python, [script | args], env: env, stderr_to_stdout: true)
    assert status == 0, out
  end

  defp read_frames(<<>>), do: []

  defp read_frames(<<n::32, frame::binary-size(n), rest::binary>>),
    do: [frame | read_frames(rest)]
end
