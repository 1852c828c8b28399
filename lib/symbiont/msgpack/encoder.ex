defmodule Symbiont.MsgPack.Encoder do
  @moduledoc """
  The encoding half of `Symbiont.MsgPack`: each Elixir term to its msgpack form, as
  iodata, by the mapping in `Symbiont.MsgPack`'s moduledoc (the shortest integer and
  length forms, Erlang terms as ext types, timestamps in the shortest of their three
  forms). `Symbiont.MsgPack.encode/2` is the API.
  """

  alias Symbiont.MsgPack.{Bin, Ext, Raw, Timestamp}

  use Symbiont.MsgPack.ExtTypes

  @doc """
  Encodes `term` as msgpack iodata, or says why it cannot be: see
  `Symbiont.MsgPack.encode/2`.

      iex> Symbiont.MsgPack.Encoder.encode({:ok, 1}) |> elem(1) |> IO.iodata_to_binary()
      <<0xC7, 6, 2, 0x92, 0xD5, 1, "ok", 1>>
  """
  @spec encode(term) :: {:ok, iodata} | {:error, Symbiont.MsgPack.encode_error()}
  def encode(term) do
    {:ok, enc(term)}
  catch
    {__MODULE__, reason} -> {:error, reason}
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

  # What a Symbiont function's error is on the wire (erlang.call's answer): its fields.
  defp enc(%Symbiont.Error{reason: r, message: m, details: d}),
    do: enc(%{"reason" => r, "message" => m, "details" => d})

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
  @doc """
  Whether `b` is valid UTF-8 (then it is encoded as a str, else as a bin).

      iex> {Symbiont.MsgPack.Encoder.utf8?("é"), Symbiont.MsgPack.Encoder.utf8?(<<0xFF>>)}
      {true, false}
  """
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
end
