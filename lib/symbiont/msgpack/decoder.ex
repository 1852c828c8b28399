defmodule Symbiont.MsgPack.Decoder do
  @moduledoc """
  The decoding half of `Symbiont.MsgPack`: one msgpack value from bytes that may come
  from anyone ("Decoding untrusted bytes" in `Symbiont.MsgPack`: every length checked
  against the bytes left before anything is built, nesting bounded, atoms only if they
  exist, external terms `[:safe]` and never compressed), and the count of the values in
  bytes, by their headers alone, for `Symbiont.MsgPack.decode/2`'s `:max_values`.
  `Symbiont.MsgPack.decode/1,2` are the API.
  """

  import Bitwise, only: [<<<: 2]

  alias Symbiont.MsgPack.{Ext, Timestamp}

  @max_depth 1024
  use Symbiont.MsgPack.ExtTypes

  @doc """
  Decodes exactly one msgpack value from `binary`; never raises. See
  `Symbiont.MsgPack.decode/1`.

      iex> Symbiont.MsgPack.Decoder.decode(<<0x92, 0xC0, 0xC3>>)
      {:ok, [nil, true]}
  """
  @spec decode(binary) :: {:ok, term} | {:error, Symbiont.MsgPack.decode_error()}
  def decode(binary) when is_binary(binary) do
    case dec(binary, 0) do
      {value, <<>>} -> {:ok, value}
      {_value, rest} -> {:error, {:trailing_bytes, byte_size(rest)}}
    end
  catch
    {__MODULE__, reason} -> {:error, reason}
  end

  @doc """
  Whether `binary` holds more than `max` msgpack values (`:over`) or not (`:ok`),
  counted by walking the headers, without building anything; bytes that do not parse
  end the count (`:ok`: `decode/1` then says what is wrong with them).

      iex> Symbiont.MsgPack.Decoder.count(<<0x93, 1, 2, 3>>, 4)
      :ok
      iex> Symbiont.MsgPack.Decoder.count(<<0x93, 1, 2, 3>>, 3)
      :over
  """
  @spec count(binary, non_neg_integer) :: :ok | :over
  def count(binary, max) when is_binary(binary), do: count_values(binary, 1, max)

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
