defmodule Symbiont.MsgPack do
  @moduledoc """
  The msgpack codec of the wire protocol: the complete spec, with Erlang terms mapped to
  ext types so that they survive a round trip through Python (`docs/PROTOCOL.md` §2).

      iex> {:ok, iodata} = Symbiont.MsgPack.encode(%{"id" => 1, "tags" => [:new, {1, 2}]})
      iex> Symbiont.MsgPack.decode(IO.iodata_to_binary(iodata))
      {:ok, %{"id" => 1, "tags" => [:new, {1, 2}]}}

  ## Mapping

  | Elixir | msgpack |
  |---|---|
  | `nil`, `true`, `false` | nil, true, false |
  | integer (−2^63 … 2^64−1) | the shortest of fixint, int/uint 8/16/32/64 |
  | float | float 64 (float 32 is decoded too) |
  | `:NaN`, `:"+Infinity"`, `:"-Infinity"` | float 64 NaN/±Inf (decoded back to these atoms: BEAM floats cannot hold them) |
  | binary, valid UTF-8 | str (fixstr, str 8/16/32) |
  | binary, not UTF-8, or `%Symbiont.MsgPack.Bin{}` | bin 8/16/32 (always decoded as a plain binary) |
  | `%Symbiont.MsgPack.Raw{}` | its bytes, as they are (already msgpack) |
  | list | array (fixarray, array 16/32) |
  | map (not a struct) | map (fixmap, map 16/32) |
  | `DateTime` | timestamp ext −1 (32, 64 or 96 bits, the shortest that fits) |
  | `%Symbiont.MsgPack.Timestamp{}` | timestamp ext −1 with nanoseconds |
  | other atom | ext 1: the atom's name |
  | tuple | ext 2: the array of its elements |
  | pid | ext 3: `:erlang.term_to_binary/1` |
  | reference | ext 4: `:erlang.term_to_binary/1` |
  | port, fun | ext 5: `:erlang.term_to_binary/1` |
  | `%Symbiont.MsgPack.Ext{}` | ext 8/16/32 or fixext 1/2/4/8/16 |

  Other structs cannot be encoded (convert them to maps first): `encode/1` returns
  `{:error, {:unencodable, value}}`.

  ## Decoding untrusted bytes

  `decode/1` never raises. Every length and count is checked against the bytes that remain
  before anything is built, so a five-byte input that claims a 4 GiB string or a billion
  array elements fails at once with `{:error, {:truncated, ...}}`. Nesting is limited to
  1024 levels. An ext 1 atom that does not already exist on the node decodes as a string
  (the atom table cannot be exhausted); ext 3/4/5 are decoded with `:erlang.binary_to_term/2`
  and `[:safe]`, compressed terms are refused, and the type must match the ext.
  """

  import Bitwise, only: [<<<: 2]

  alias Symbiont.MsgPack.{Bin, Ext, Raw, Timestamp}

  @max_depth 1024
  @ext_atom 1
  @ext_tuple 2
  @ext_pid 3
  @ext_ref 4
  @ext_opaque 5
  @ext_timestamp -1

  @typedoc "Why a value could not be encoded."
  @type encode_error ::
          {:unencodable, term}
          | {:integer_out_of_range, integer}
          | {:too_large, atom, non_neg_integer}

  @typedoc "Why bytes could not be decoded."
  @type decode_error ::
          {:truncated, atom}
          | {:invalid_byte, byte}
          | {:trailing_bytes, pos_integer}
          | {:too_deep, pos_integer}
          | {:invalid_ext, integer, String.t()}
          | {:over_limit, :bytes, pos_integer, non_neg_integer}
          | {:over_limit, :values, non_neg_integer}
          | :not_a_binary

  ## Encoding

  @doc """
  Encodes `term` as msgpack.

  Returns iodata by default (cheap to hand to a port or a socket); `iodata: false` returns
  a binary.

      iex> Symbiont.MsgPack.encode([1, "a"], iodata: false)
      {:ok, <<0x92, 0x01, 0xA1, ?a>>}

      iex> Symbiont.MsgPack.encode(%URI{})
      {:error, {:unencodable, %URI{}}}
  """
  @spec encode(term, iodata: boolean) :: {:ok, iodata} | {:error, encode_error}
  def encode(term, opts \\ []) do
    iodata = enc(term)
    {:ok, if(Keyword.get(opts, :iodata, true), do: iodata, else: IO.iodata_to_binary(iodata))}
  catch
    {__MODULE__, reason} -> {:error, reason}
  end

  @doc """
  Like `encode/2` but raises `ArgumentError` when `term` cannot be encoded.

      iex> Symbiont.MsgPack.encode!(300, iodata: false)
      <<0xCD, 0x01, 0x2C>>
  """
  @spec encode!(term, iodata: boolean) :: iodata
  def encode!(term, opts \\ []) do
    case encode(term, opts) do
      {:ok, data} ->
        data

      {:error, reason} ->
        raise ArgumentError, "cannot encode as msgpack: " <> format_error(reason)
    end
  end

  defp enc(nil), do: <<0xC0>>
  defp enc(false), do: <<0xC2>>
  defp enc(true), do: <<0xC3>>
  defp enc(n) when is_integer(n), do: enc_int(n)
  defp enc(f) when is_float(f), do: <<0xCB, f::float-64>>
  defp enc(b) when is_binary(b), do: if(utf8?(b), do: enc_str(b), else: enc_bin(b))
  defp enc(l) when is_list(l), do: enc_list(l)
  defp enc(%Bin{data: data}) when is_binary(data), do: enc_bin(data)
  defp enc(%Raw{data: data}), do: data

  defp enc(%Ext{type: type, data: data})
       when is_integer(type) and type in -128..127 and is_binary(data),
       do: enc_ext(type, data)

  defp enc(%Timestamp{seconds: s, nanoseconds: ns})
       when is_integer(s) and is_integer(ns) and ns in 0..999_999_999,
       do: enc_timestamp(s, ns)

  defp enc(%DateTime{} = dt) do
    us = DateTime.to_unix(dt, :microsecond)
    enc_timestamp(Integer.floor_div(us, 1_000_000), Integer.mod(us, 1_000_000) * 1000)
  end

  defp enc(%{__struct__: _} = struct), do: throw({__MODULE__, {:unencodable, struct}})
  defp enc(m) when is_map(m), do: enc_map(m)
  defp enc(:NaN), do: <<0xCB, 0x7FF8000000000000::64>>
  defp enc(:"+Infinity"), do: <<0xCB, 0x7FF0000000000000::64>>
  defp enc(:"-Infinity"), do: <<0xCB, 0xFFF0000000000000::64>>
  defp enc(a) when is_atom(a), do: enc_ext(@ext_atom, Atom.to_string(a))

  defp enc(t) when is_tuple(t),
    do: enc_ext(@ext_tuple, IO.iodata_to_binary(enc_list(Tuple.to_list(t))))

  defp enc(p) when is_pid(p), do: enc_ext(@ext_pid, :erlang.term_to_binary(p))
  defp enc(r) when is_reference(r), do: enc_ext(@ext_ref, :erlang.term_to_binary(r))

  defp enc(o) when is_port(o) or is_function(o),
    do: enc_ext(@ext_opaque, :erlang.term_to_binary(o))

  defp enc(other), do: throw({__MODULE__, {:unencodable, other}})

  # The same answer as String.valid?/1 (surrogates and overlong forms are not UTF-8 to
  # either), from a BIF rather than a match per code point: 2-3x faster on the short
  # strings of every frame (kinds, topics, names), and it returns `b` itself, no copy.
  @doc false
  @spec utf8?(binary) :: boolean
  def utf8?(b), do: :unicode.characters_to_binary(b) === b

  defp enc_int(n) when n >= 0 do
    cond do
      n < 0x80 -> <<n>>
      n < 0x100 -> <<0xCC, n>>
      n < 0x10000 -> <<0xCD, n::16>>
      n < 0x100000000 -> <<0xCE, n::32>>
      n < 0x10000000000000000 -> <<0xCF, n::64>>
      true -> throw({__MODULE__, {:integer_out_of_range, n}})
    end
  end

  defp enc_int(n) do
    cond do
      n >= -32 -> <<n::signed-8>>
      n >= -0x80 -> <<0xD0, n::signed-8>>
      n >= -0x8000 -> <<0xD1, n::signed-16>>
      n >= -0x80000000 -> <<0xD2, n::signed-32>>
      n >= -0x8000000000000000 -> <<0xD3, n::signed-64>>
      true -> throw({__MODULE__, {:integer_out_of_range, n}})
    end
  end

  # iodata with a binary tail: a valid iolist, and no copy of the string.
  @dialyzer {:no_improper_lists, enc_str: 1, enc_bin: 1}
  defp enc_str(s) do
    case byte_size(s) do
      n when n < 32 -> [<<0b101::3, n::5>> | s]
      n when n < 0x100 -> [<<0xD9, n>> | s]
      n when n < 0x10000 -> [<<0xDA, n::16>> | s]
      n when n < 0x100000000 -> [<<0xDB, n::32>> | s]
      n -> throw({__MODULE__, {:too_large, :str, n}})
    end
  end

  defp enc_bin(b) do
    case byte_size(b) do
      n when n < 0x100 -> [<<0xC4, n>> | b]
      n when n < 0x10000 -> [<<0xC5, n::16>> | b]
      n when n < 0x100000000 -> [<<0xC6, n::32>> | b]
      n -> throw({__MODULE__, {:too_large, :bin, n}})
    end
  end

  defp enc_list(l) do
    {items, n} = enc_items(l, [], 0)

    header =
      cond do
        n < 16 -> <<0b1001::4, n::4>>
        n < 0x10000 -> <<0xDC, n::16>>
        n < 0x100000000 -> <<0xDD, n::32>>
        true -> throw({__MODULE__, {:too_large, :array, n}})
      end

    [header | items]
  end

  defp enc_items([], acc, n), do: {:lists.reverse(acc), n}
  defp enc_items([x | rest], acc, n), do: enc_items(rest, [enc(x) | acc], n + 1)
  defp enc_items(improper, _acc, _n), do: throw({__MODULE__, {:unencodable, improper}})

  defp enc_map(m) do
    header =
      case map_size(m) do
        n when n < 16 -> <<0b1000::4, n::4>>
        n when n < 0x10000 -> <<0xDE, n::16>>
        n when n < 0x100000000 -> <<0xDF, n::32>>
        n -> throw({__MODULE__, {:too_large, :map, n}})
      end

    [header | enc_pairs(:maps.to_list(m))]
  end

  defp enc_pairs([]), do: []
  defp enc_pairs([{k, v} | rest]), do: [enc(k), enc(v) | enc_pairs(rest)]

  defp enc_ext(type, data) do
    header =
      case byte_size(data) do
        1 -> <<0xD4, type::signed-8>>
        2 -> <<0xD5, type::signed-8>>
        4 -> <<0xD6, type::signed-8>>
        8 -> <<0xD7, type::signed-8>>
        16 -> <<0xD8, type::signed-8>>
        n when n < 0x100 -> <<0xC7, n, type::signed-8>>
        n when n < 0x10000 -> <<0xC8, n::16, type::signed-8>>
        n when n < 0x100000000 -> <<0xC9, n::32, type::signed-8>>
        n -> throw({__MODULE__, {:too_large, :ext, n}})
      end

    [header | data]
  end

  defp enc_timestamp(s, 0) when s in 0..0xFFFFFFFF, do: enc_ext(@ext_timestamp, <<s::32>>)

  defp enc_timestamp(s, ns) when s in 0..0x3FFFFFFFF,
    do: enc_ext(@ext_timestamp, <<ns::30, s::34>>)

  defp enc_timestamp(s, ns) when s in -0x8000000000000000..0x7FFFFFFFFFFFFFFF,
    do: enc_ext(@ext_timestamp, <<ns::32, s::signed-64>>)

  defp enc_timestamp(s, _ns), do: throw({__MODULE__, {:integer_out_of_range, s}})

  ## Decoding

  @doc """
  Decodes exactly one msgpack value from `binary`. Never raises.

      iex> Symbiont.MsgPack.decode(<<0x93, 1, 2, 3>>)
      {:ok, [1, 2, 3]}

      iex> Symbiont.MsgPack.decode(<<0xDD, 0xFF, 0xFF, 0xFF, 0xFF>>)
      {:error, {:truncated, :array}}

      iex> Symbiont.MsgPack.decode(<<0xC0, 0xC0>>)
      {:error, {:trailing_bytes, 1}}
  """
  @spec decode(binary) :: {:ok, term} | {:error, decode_error}
  def decode(binary) when is_binary(binary) do
    case dec(binary, 0) do
      {value, <<>>} -> {:ok, value}
      {_value, rest} -> {:error, {:trailing_bytes, byte_size(rest)}}
    end
  catch
    {__MODULE__, reason} -> {:error, reason}
  end

  def decode(_), do: {:error, :not_a_binary}

  @doc """
  Like `decode/1`, within limits checked **before** anything is built, for bytes whose
  decoded form must stay small (`Symbiont.ControlPlane`):

    * `:max_bytes` - the most bytes `binary` may have: `{:error, {:over_limit, :bytes,
      size, max}}` past it, without a look at them;
    * `:max_values` - the most msgpack values it may hold, counting every value (scalars,
      arrays, maps, map keys, and what an ext tuple holds): `{:error, {:over_limit,
      :values, max}}` past it. They are counted by walking the headers, without building
      anything, and the walk stops at the first value over the limit.

  Without either, it is `decode/1`.

      iex> Symbiont.MsgPack.decode(<<0x93, 1, 2, 3>>, max_values: 4)
      {:ok, [1, 2, 3]}

      iex> Symbiont.MsgPack.decode(<<0x93, 1, 2, 3>>, max_values: 3)
      {:error, {:over_limit, :values, 3}}

      iex> Symbiont.MsgPack.decode(<<0x93, 1, 2, 3>>, max_bytes: 3)
      {:error, {:over_limit, :bytes, 4, 3}}
  """
  @spec decode(binary, max_bytes: non_neg_integer, max_values: non_neg_integer) ::
          {:ok, term} | {:error, decode_error}
  def decode(binary, opts) when is_binary(binary) and is_list(opts) do
    max_bytes = Keyword.get(opts, :max_bytes)
    max_values = Keyword.get(opts, :max_values)

    cond do
      max_bytes != nil and byte_size(binary) > max_bytes ->
        {:error, {:over_limit, :bytes, byte_size(binary), max_bytes}}

      max_values != nil and count_values(binary, 1, max_values) == :over ->
        {:error, {:over_limit, :values, max_values}}

      true ->
        decode(binary)
    end
  end

  def decode(_binary, opts) when is_list(opts), do: {:error, :not_a_binary}

  @doc """
  Like `decode/1` but raises `ArgumentError` on invalid input.

      iex> Symbiont.MsgPack.decode!(<<0xA2, "hi">>)
      "hi"
  """
  @spec decode!(binary) :: term
  def decode!(binary) do
    case decode(binary) do
      {:ok, value} -> value
      {:error, reason} -> raise ArgumentError, "invalid msgpack: " <> format_error(reason)
    end
  end

  @doc """
  A readable sentence for an error reason of `encode/2` or `decode/1`.

      iex> Symbiont.MsgPack.format_error({:truncated, :str})
      "input ends inside a str"
  """
  @spec format_error(encode_error | decode_error) :: String.t()
  def format_error({:unencodable, v}), do: "no msgpack form for #{inspect(v, limit: 10)}"
  def format_error({:integer_out_of_range, n}), do: "integer #{n} is outside -2^63..2^64-1"
  def format_error({:too_large, what, n}), do: "#{what} of #{n} elements/bytes exceeds 2^32-1"
  def format_error({:truncated, what}), do: "input ends inside a #{what}"

  def format_error({:invalid_byte, b}),
    do: "byte 0x#{Integer.to_string(b, 16)} is not a msgpack type"

  def format_error({:trailing_bytes, n}), do: "#{n} trailing byte(s) after the value"
  def format_error({:too_deep, d}), do: "nesting deeper than #{d} levels"
  def format_error({:invalid_ext, t, why}), do: "invalid ext #{t}: #{why}"
  def format_error(:not_a_binary), do: "input is not a binary"

  def format_error({:over_limit, :bytes, size, max}),
    do: "#{size} bytes, over the limit of #{max}"

  def format_error({:over_limit, :values, max}),
    do: "more than #{max} values (elements, keys and scalars), the limit"

  def format_error(other), do: inspect(other)

  defp fail(reason), do: throw({__MODULE__, reason})

  # The values of `pending` msgpack values at the start of `bin`, counted against `left`
  # without building them: :over once one more than `left` starts, :ok otherwise. Bytes
  # that do not parse end the count (:ok): decode/1 then says what is wrong with them.
  defp count_values(_bin, 0, _left), do: :ok
  defp count_values(_bin, _pending, 0), do: :over

  defp count_values(bin, pending, left) do
    case value_head(bin) do
      {:skip, n, rest} ->
        case rest do
          <<_::binary-size(n), rest::binary>> -> count_values(rest, pending - 1, left - 1)
          _ -> :ok
        end

      {:nest, n, rest} ->
        count_values(rest, pending - 1 + n, left - 1)

      :end ->
        :ok
    end
  end

  # A value's header: {:skip, bytes of its body, rest}, or {:nest, values it holds, rest}
  # for an array, a map (keys and values) or an ext tuple (the array it holds: its bytes
  # follow), or :end for bytes that are not a header.
  defp value_head(<<n, rest::binary>>) when n < 0x80 or n >= 0xE0, do: {:skip, 0, rest}
  defp value_head(<<0b1000::4, n::4, rest::binary>>), do: {:nest, 2 * n, rest}
  defp value_head(<<0b1001::4, n::4, rest::binary>>), do: {:nest, n, rest}
  defp value_head(<<0b101::3, n::5, rest::binary>>), do: {:skip, n, rest}
  defp value_head(<<b, rest::binary>>) when b in [0xC0, 0xC2, 0xC3], do: {:skip, 0, rest}
  defp value_head(<<0xC4, n, rest::binary>>), do: {:skip, n, rest}
  defp value_head(<<0xC5, n::16, rest::binary>>), do: {:skip, n, rest}
  defp value_head(<<0xC6, n::32, rest::binary>>), do: {:skip, n, rest}
  defp value_head(<<0xC7, n, t::signed-8, rest::binary>>), do: ext_head(t, n, rest)
  defp value_head(<<0xC8, n::16, t::signed-8, rest::binary>>), do: ext_head(t, n, rest)
  defp value_head(<<0xC9, n::32, t::signed-8, rest::binary>>), do: ext_head(t, n, rest)
  defp value_head(<<0xCA, rest::binary>>), do: {:skip, 4, rest}
  defp value_head(<<0xCB, rest::binary>>), do: {:skip, 8, rest}
  defp value_head(<<b, rest::binary>>) when b in 0xCC..0xCF, do: {:skip, 1 <<< (b - 0xCC), rest}
  defp value_head(<<b, rest::binary>>) when b in 0xD0..0xD3, do: {:skip, 1 <<< (b - 0xD0), rest}

  defp value_head(<<b, t::signed-8, rest::binary>>) when b in 0xD4..0xD8,
    do: ext_head(t, 1 <<< (b - 0xD4), rest)

  defp value_head(<<0xD9, n, rest::binary>>), do: {:skip, n, rest}
  defp value_head(<<0xDA, n::16, rest::binary>>), do: {:skip, n, rest}
  defp value_head(<<0xDB, n::32, rest::binary>>), do: {:skip, n, rest}
  defp value_head(<<0xDC, n::16, rest::binary>>), do: {:nest, n, rest}
  defp value_head(<<0xDD, n::32, rest::binary>>), do: {:nest, n, rest}
  defp value_head(<<0xDE, n::16, rest::binary>>), do: {:nest, 2 * n, rest}
  defp value_head(<<0xDF, n::32, rest::binary>>), do: {:nest, 2 * n, rest}
  defp value_head(_bin), do: :end

  defp ext_head(@ext_tuple, _n, rest), do: {:nest, 1, rest}
  defp ext_head(_type, n, rest), do: {:skip, n, rest}

  # Positive fixint, fixmap, fixarray, fixstr, nil, booleans, negative fixint.
  defp dec(<<n, rest::binary>>, _d) when n < 0x80, do: {n, rest}
  defp dec(<<0b1000::4, n::4, rest::binary>>, d), do: dec_map(n, rest, d)
  defp dec(<<0b1001::4, n::4, rest::binary>>, d), do: dec_array(n, rest, d)
  defp dec(<<0b101::3, n::5, rest::binary>>, _d), do: dec_raw(n, rest, :str)
  defp dec(<<0xC0, rest::binary>>, _d), do: {nil, rest}
  defp dec(<<0xC2, rest::binary>>, _d), do: {false, rest}
  defp dec(<<0xC3, rest::binary>>, _d), do: {true, rest}
  defp dec(<<n::signed-8, rest::binary>>, _d) when n >= -32, do: {n, rest}
  # bin, ext, float, uint, int, fixext, str, array, map with explicit lengths.
  defp dec(<<0xC4, n, rest::binary>>, _d), do: dec_raw(n, rest, :bin)
  defp dec(<<0xC5, n::16, rest::binary>>, _d), do: dec_raw(n, rest, :bin)
  defp dec(<<0xC6, n::32, rest::binary>>, _d), do: dec_raw(n, rest, :bin)
  defp dec(<<0xC7, n, t::signed-8, rest::binary>>, d), do: dec_ext(t, n, rest, d)
  defp dec(<<0xC8, n::16, t::signed-8, rest::binary>>, d), do: dec_ext(t, n, rest, d)
  defp dec(<<0xC9, n::32, t::signed-8, rest::binary>>, d), do: dec_ext(t, n, rest, d)
  defp dec(<<0xCA, f::bits-32, rest::binary>>, _d), do: {dec_float(f), rest}
  defp dec(<<0xCB, f::bits-64, rest::binary>>, _d), do: {dec_float(f), rest}
  defp dec(<<0xCC, n, rest::binary>>, _d), do: {n, rest}
  defp dec(<<0xCD, n::16, rest::binary>>, _d), do: {n, rest}
  defp dec(<<0xCE, n::32, rest::binary>>, _d), do: {n, rest}
  defp dec(<<0xCF, n::64, rest::binary>>, _d), do: {n, rest}
  defp dec(<<0xD0, n::signed-8, rest::binary>>, _d), do: {n, rest}
  defp dec(<<0xD1, n::signed-16, rest::binary>>, _d), do: {n, rest}
  defp dec(<<0xD2, n::signed-32, rest::binary>>, _d), do: {n, rest}
  defp dec(<<0xD3, n::signed-64, rest::binary>>, _d), do: {n, rest}
  defp dec(<<0xD4, t::signed-8, rest::binary>>, d), do: dec_ext(t, 1, rest, d)
  defp dec(<<0xD5, t::signed-8, rest::binary>>, d), do: dec_ext(t, 2, rest, d)
  defp dec(<<0xD6, t::signed-8, rest::binary>>, d), do: dec_ext(t, 4, rest, d)
  defp dec(<<0xD7, t::signed-8, rest::binary>>, d), do: dec_ext(t, 8, rest, d)
  defp dec(<<0xD8, t::signed-8, rest::binary>>, d), do: dec_ext(t, 16, rest, d)
  defp dec(<<0xD9, n, rest::binary>>, _d), do: dec_raw(n, rest, :str)
  defp dec(<<0xDA, n::16, rest::binary>>, _d), do: dec_raw(n, rest, :str)
  defp dec(<<0xDB, n::32, rest::binary>>, _d), do: dec_raw(n, rest, :str)
  defp dec(<<0xDC, n::16, rest::binary>>, d), do: dec_array(n, rest, d)
  defp dec(<<0xDD, n::32, rest::binary>>, d), do: dec_array(n, rest, d)
  defp dec(<<0xDE, n::16, rest::binary>>, d), do: dec_map(n, rest, d)
  defp dec(<<0xDF, n::32, rest::binary>>, d), do: dec_map(n, rest, d)
  defp dec(<<0xC1, _::binary>>, _d), do: fail({:invalid_byte, 0xC1})
  defp dec(<<>>, _d), do: fail({:truncated, :value})
  defp dec(<<b, _::binary>>, _d), do: fail({:truncated, type_name(b)})

  defp type_name(b) when b in 0xC4..0xC6, do: :bin
  defp type_name(b) when b in 0xC7..0xC9 or b in 0xD4..0xD8, do: :ext
  defp type_name(b) when b in 0xCA..0xCB, do: :float
  defp type_name(b) when b in 0xCC..0xD3, do: :integer
  defp type_name(b) when b in 0xD9..0xDB, do: :str
  defp type_name(b) when b in 0xDC..0xDD, do: :array
  defp type_name(_map), do: :map

  defp dec_raw(n, bin, what) do
    case bin do
      <<raw::binary-size(n), rest::binary>> -> {raw, rest}
      _ -> fail({:truncated, what})
    end
  end

  defp dec_float(<<f::float-32>>), do: f
  defp dec_float(<<f::float-64>>), do: f
  # NaN and infinities, which BEAM floats cannot hold.
  defp dec_float(<<0::1, 0xFF::8, 0::23>>), do: :"+Infinity"
  defp dec_float(<<1::1, 0xFF::8, 0::23>>), do: :"-Infinity"
  defp dec_float(<<0::1, 0x7FF::11, 0::52>>), do: :"+Infinity"
  defp dec_float(<<1::1, 0x7FF::11, 0::52>>), do: :"-Infinity"
  defp dec_float(_nan), do: :NaN

  # Each element needs at least one byte, so a count larger than what remains is refused
  # before anything is built.
  defp dec_array(n, rest, _d) when n > byte_size(rest), do: fail({:truncated, :array})
  defp dec_array(_n, _rest, d) when d >= @max_depth, do: fail({:too_deep, @max_depth})
  defp dec_array(n, rest, d), do: dec_items(n, rest, d + 1, [])

  defp dec_items(0, rest, _d, acc), do: {:lists.reverse(acc), rest}

  defp dec_items(n, bin, d, acc) do
    {value, rest} = dec(bin, d)
    dec_items(n - 1, rest, d, [value | acc])
  end

  defp dec_map(n, rest, _d) when 2 * n > byte_size(rest), do: fail({:truncated, :map})
  defp dec_map(_n, _rest, d) when d >= @max_depth, do: fail({:too_deep, @max_depth})
  defp dec_map(n, rest, d), do: dec_pairs(n, rest, d + 1, [])

  defp dec_pairs(0, rest, _d, acc), do: {:maps.from_list(acc), rest}

  defp dec_pairs(n, bin, d, acc) do
    {key, rest} = dec(bin, d)
    {value, rest} = dec(rest, d)
    dec_pairs(n - 1, rest, d, [{key, value} | acc])
  end

  defp dec_ext(type, n, bin, d) do
    case bin do
      <<data::binary-size(n), rest::binary>> -> {ext_value(type, data, d), rest}
      _ -> fail({:truncated, :ext})
    end
  end

  defp ext_value(@ext_timestamp, data, _d), do: timestamp(data)

  defp ext_value(@ext_atom, name, _d) do
    if String.valid?(name) and String.length(name) <= 255,
      do: existing_atom(name),
      else: fail({:invalid_ext, @ext_atom, "atom name must be UTF-8 of at most 255 characters"})
  end

  defp ext_value(@ext_tuple, data, d) do
    if d >= @max_depth, do: fail({:too_deep, @max_depth})

    case dec(data, d + 1) do
      {list, <<>>} when is_list(list) -> List.to_tuple(list)
      _ -> fail({:invalid_ext, @ext_tuple, "a tuple must hold exactly one array"})
    end
  end

  defp ext_value(@ext_pid, data, _d), do: term(@ext_pid, data, &is_pid/1, "a pid")
  defp ext_value(@ext_ref, data, _d), do: term(@ext_ref, data, &is_reference/1, "a reference")

  defp ext_value(@ext_opaque, data, _d),
    do: term(@ext_opaque, data, &(is_port(&1) or is_function(&1)), "a port or a fun")

  defp ext_value(type, data, _d), do: %Ext{type: type, data: data}

  defp existing_atom(name) do
    String.to_existing_atom(name)
  rescue
    ArgumentError -> name
  end

  # Compressed external terms (tag 80) could expand far beyond the frame: refused.
  defp term(type, <<131, 80, _::binary>>, _check, _what),
    do: fail({:invalid_ext, type, "compressed terms are not accepted"})

  defp term(type, data, check, what) do
    term = :erlang.binary_to_term(data, [:safe])
    if check.(term), do: term, else: fail({:invalid_ext, type, "expected #{what}"})
  rescue
    ArgumentError -> fail({:invalid_ext, type, "not a valid external term"})
  end

  defp timestamp(<<s::32>>), do: to_datetime(s, 0)
  defp timestamp(<<ns::30, s::34>>) when ns < 1_000_000_000, do: to_datetime(s, ns)
  defp timestamp(<<ns::32, s::signed-64>>) when ns < 1_000_000_000, do: to_datetime(s, ns)

  defp timestamp(_),
    do:
      fail(
        {:invalid_ext, @ext_timestamp, "a timestamp holds 4, 8 or 12 bytes, nanoseconds < 10^9"}
      )

  defp to_datetime(s, ns) when rem(ns, 1000) == 0 do
    unix =
      if ns == 0,
        do: DateTime.from_unix(s),
        else: DateTime.from_unix(s * 1_000_000 + div(ns, 1000), :microsecond)

    case unix do
      {:ok, dt} -> dt
      {:error, _} -> %Timestamp{seconds: s, nanoseconds: ns}
    end
  end

  defp to_datetime(s, ns), do: %Timestamp{seconds: s, nanoseconds: ns}
end
