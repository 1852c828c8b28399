defmodule Symbiont.StatusPage.JSON do
  @moduledoc """
  A small JSON encoder and decoder (RFC 8259), for the status page and its tests: OTP 25
  has no `:json` module and Elixir 1.14 no `JSON`, and the project takes no Hex package.

  `encode/1` never fails: it is for showing data, so what JSON cannot carry (a pid, a
  tuple, a binary that is not UTF-8) becomes its `inspect/1` text.

      iex> Symbiont.StatusPage.JSON.encode(%{"agent" => "billing", "queue" => [1, 2.5, nil, true]})
      ~s({"agent":"billing","queue":[1,2.5,null,true]})
      iex> Symbiont.StatusPage.JSON.decode(~s({"a": [1, -2.5e1, "\\\\u00e9\\\\ud83d\\\\ude00"], "b": null}))
      {:ok, %{"a" => [1, -25.0, "é😀"], "b" => nil}}
      iex> {:error, error} = Symbiont.StatusPage.JSON.decode("[1,")
      iex> {error.reason, error.message}
      {:invalid, "unexpected end of input at byte 3"}
  """

  @doc "Encodes `term` as JSON text (a binary); see the moduledoc for what is not JSON."
  @spec encode(term) :: binary
  def encode(term), do: term |> value() |> IO.iodata_to_binary()

  defp value(nil), do: "null"
  defp value(true), do: "true"
  defp value(false), do: "false"
  defp value(n) when is_integer(n), do: Integer.to_string(n)
  defp value(f) when is_float(f), do: :erlang.float_to_binary(f, [:short])
  defp value(a) when is_atom(a), do: string(Atom.to_string(a))
  defp value(s) when is_binary(s), do: if(String.valid?(s), do: string(s), else: inspected(s))
  defp value(%{__struct__: _} = struct), do: inspected(struct)

  defp value(map) when is_map(map) do
    pairs =
      map
      |> Enum.map(fn {k, v} -> [string(key(k)), ?:, value(v)] end)
      |> Enum.intersperse(?,)

    [?{, pairs, ?}]
  end

  defp value(list) when is_list(list) do
    if List.improper?(list),
      do: inspected(list),
      else: [?[, list |> Enum.map(&value/1) |> Enum.intersperse(?,), ?]]
  end

  defp value(other), do: inspected(other)

  defp inspected(term), do: string(inspect(term, limit: 50, printable_limit: 4096))

  defp key(k) when is_binary(k), do: if(String.valid?(k), do: k, else: inspect(k))
  defp key(k) when is_atom(k), do: Atom.to_string(k)
  defp key(k) when is_integer(k), do: Integer.to_string(k)
  defp key(k), do: inspect(k)

  # Escapes what JSON requires, and `<`, `>`, `&` too, so that the text is also safe
  # inside an HTML <script> element.
  defp string(s), do: [?", escape(s, s, 0, 0, []), ?"]

  defp escape(<<c, rest::binary>>, s, start, len, acc)
       when c < 0x20 or c in [?", ?\\, ?<, ?>, ?&] do
    acc = [acc, binary_part(s, start, len), escape_char(c)]
    escape(rest, s, start + len + 1, 0, acc)
  end

  defp escape(<<_, rest::binary>>, s, start, len, acc), do: escape(rest, s, start, len + 1, acc)
  defp escape(<<>>, s, start, len, acc), do: [acc, binary_part(s, start, len)]

  defp escape_char(?"), do: "\\\""
  defp escape_char(?\\), do: "\\\\"
  defp escape_char(?\n), do: "\\n"
  defp escape_char(?\r), do: "\\r"
  defp escape_char(?\t), do: "\\t"

  defp escape_char(c),
    do: "\\u" <> String.pad_leading(Integer.to_string(c, 16), 4, "0")

  @doc """
  Decodes JSON text: objects become maps with string keys, `null` is `nil`. Returns
  an `:invalid` `Symbiont.Error` whose message names the byte where the text stops being
  JSON.
  """
  @spec decode(binary) :: {:ok, term} | {:error, Symbiont.Error.t()}
  def decode(text) when is_binary(text) do
    {value, rest} = parse(skip(text), text)

    case skip(rest) do
      "" -> {:ok, value}
      rest -> fail(rest, text, "unexpected text after the value")
    end
  catch
    {:json_error, message} -> {:error, Symbiont.Error.new(:invalid, message)}
  end

  @doc "Like `decode/1`, but raises `ArgumentError`."
  @spec decode!(binary) :: term
  def decode!(text) do
    case decode(text) do
      {:ok, value} -> value
      {:error, error} -> raise ArgumentError, "invalid JSON: " <> Exception.message(error)
    end
  end

  defp parse("{" <> rest, all), do: object(skip(rest), all, [])
  defp parse("[" <> rest, all), do: array(skip(rest), all, [])
  defp parse("\"" <> rest, all), do: str(rest, all, [])
  defp parse("true" <> rest, _all), do: {true, rest}
  defp parse("false" <> rest, _all), do: {false, rest}
  defp parse("null" <> rest, _all), do: {nil, rest}
  defp parse(<<c, _::binary>> = rest, all) when c in ?0..?9 or c == ?-, do: number(rest, all)
  defp parse(rest, all), do: fail(rest, all, "expected a value")

  defp object("}" <> rest, _all, []), do: {%{}, rest}

  defp object("\"" <> rest, all, acc) do
    {key, rest} = str(rest, all, [])

    case skip(rest) do
      ":" <> rest ->
        {value, rest} = parse(skip(rest), all)

        case skip(rest) do
          "," <> rest -> object(skip(rest), all, [{key, value} | acc])
          "}" <> rest -> {Map.new([{key, value} | acc]), rest}
          rest -> fail(rest, all, "expected , or }")
        end

      rest ->
        fail(rest, all, "expected :")
    end
  end

  defp object(rest, all, _acc), do: fail(rest, all, "expected a string key")

  defp array("]" <> rest, _all, []), do: {[], rest}

  defp array(rest, all, acc) do
    {value, rest} = parse(rest, all)

    case skip(rest) do
      "," <> rest -> array(skip(rest), all, [value | acc])
      "]" <> rest -> {Enum.reverse([value | acc]), rest}
      rest -> fail(rest, all, "expected , or ]")
    end
  end

  defp str("\"" <> rest, _all, acc), do: {IO.iodata_to_binary(Enum.reverse(acc)), rest}

  defp str("\\u" <> <<hi::binary-4, "\\u", lo::binary-4, rest::binary>> = at, all, acc) do
    case {hex(hi, at, all), hex(lo, at, all)} do
      {h, l} when h in 0xD800..0xDBFF and l in 0xDC00..0xDFFF ->
        str(rest, all, [<<0x10000 + (h - 0xD800) * 0x400 + (l - 0xDC00)::utf8>> | acc])

      {h, _} ->
        str("\\u" <> lo <> rest, all, [codepoint(h, at, all) | acc])
    end
  end

  defp str("\\u" <> <<code::binary-4, rest::binary>> = at, all, acc),
    do: str(rest, all, [codepoint(hex(code, at, all), at, all) | acc])

  defp str(<<?\\, c, rest::binary>> = at, all, acc) do
    char =
      case c do
        ?" -> ?"
        ?\\ -> ?\\
        ?/ -> ?/
        ?b -> ?\b
        ?f -> ?\f
        ?n -> ?\n
        ?r -> ?\r
        ?t -> ?\t
        _ -> fail(at, all, "bad escape")
      end

    str(rest, all, [char | acc])
  end

  defp str(<<c, _::binary>> = at, all, _acc) when c < 0x20,
    do: fail(at, all, "control character in a string")

  defp str(<<c::utf8, rest::binary>>, all, acc), do: str(rest, all, [<<c::utf8>> | acc])
  defp str(rest, all, _acc), do: fail(rest, all, "unterminated or invalid UTF-8 string")

  defp hex(digits, at, all) do
    case Integer.parse(digits, 16) do
      {n, ""} -> n
      _ -> fail(at, all, "bad \\u escape")
    end
  end

  # A lone surrogate has no UTF-8 form: it becomes U+FFFD, as browsers do.
  defp codepoint(n, _at, _all) when n in 0xD800..0xDFFF, do: "\uFFFD"
  defp codepoint(n, _at, _all), do: <<n::utf8>>

  defp number(text, all) do
    case Regex.run(~r/\A-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/, text) do
      [digits] ->
        {String.to_integer(digits),
         binary_part(text, byte_size(digits), byte_size(text) - byte_size(digits))}

      [digits | _] ->
        # "1e5" is valid JSON but not an Elixir float literal.
        float =
          if String.contains?(digits, "."),
            do: digits,
            else: String.replace(digits, ~r/[eE]/, ".0e", global: false)

        {String.to_float(float),
         binary_part(text, byte_size(digits), byte_size(text) - byte_size(digits))}

      nil ->
        fail(text, all, "bad number")
    end
  end

  defp skip(<<c, rest::binary>>) when c in [?\s, ?\t, ?\n, ?\r], do: skip(rest)
  defp skip(rest), do: rest

  defp fail("", all, _what),
    do: throw({:json_error, "unexpected end of input at byte #{byte_size(all)}"})

  defp fail(rest, all, what),
    do: throw({:json_error, "#{what} at byte #{byte_size(all) - byte_size(rest)}"})
end
