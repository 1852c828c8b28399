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
  | `%Symbiont.Error{}` | map: `"reason"` (its atom), `"message"`, `"details"` (decoded as that map) |
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

  alias Symbiont.MsgPack.{Decoder, Encoder}

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
    with {:ok, iodata} <- Encoder.encode(term) do
      {:ok, if(Keyword.get(opts, :iodata, true), do: iodata, else: IO.iodata_to_binary(iodata))}
    end
  end

  @doc false
  @spec utf8?(binary) :: boolean
  defdelegate utf8?(b), to: Encoder

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
  def decode(binary) when is_binary(binary), do: Decoder.decode(binary)

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

      max_values != nil and Decoder.count(binary, max_values) == :over ->
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
end
