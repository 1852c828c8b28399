defmodule Symbiont.Host.Framer do
  @moduledoc false
  # Splits the host's byte stream into `{packet,4}` frames (PROTOCOL.md §1.3).
  #
  # The port runs in stream mode and the framing is done here rather than by the port
  # driver, so that a length prefix over the limit is refused the moment its 4 bytes arrive
  # (§1.4), instead of the driver allocating whatever size a misbehaving host claims.

  defstruct max: 64 * 1024 * 1024, buf: <<>>, need: nil, acc: [], size: 0

  @type t :: %__MODULE__{}

  @spec new(pos_integer) :: t
  def new(max) when is_integer(max) and max > 0, do: %__MODULE__{max: max}

  @doc "Feeds a chunk; returns the complete payloads in order and the new state."
  @spec feed(t, binary) ::
          {:ok, [binary], t} | {:error, {:oversize, non_neg_integer, pos_integer}}
  # The accumulated chunks are iodata with a binary tail: no copy until a frame is whole.
  @dialyzer {:no_improper_lists, feed: 2}
  def feed(%__MODULE__{need: nil, buf: buf} = f, chunk) do
    split(f, if(buf == <<>>, do: chunk, else: buf <> chunk), [])
  end

  def feed(%__MODULE__{need: need, acc: acc, size: size} = f, chunk) do
    size = size + byte_size(chunk)

    if size < need do
      {:ok, [], %{f | acc: [acc | chunk], size: size}}
    else
      <<payload::binary-size(need), rest::binary>> = IO.iodata_to_binary([acc | chunk])
      split(%{f | need: nil, acc: [], size: 0}, rest, [payload])
    end
  end

  defp split(%{max: max} = f, <<len::32, rest::binary>>, out) do
    cond do
      len > max ->
        {:error, {:oversize, len, max}}

      byte_size(rest) >= len ->
        <<payload::binary-size(len), rest::binary>> = rest
        split(f, rest, [payload | out])

      true ->
        {:ok, :lists.reverse(out), %{f | buf: <<>>, need: len, acc: rest, size: byte_size(rest)}}
    end
  end

  defp split(f, partial_header, out), do: {:ok, :lists.reverse(out), %{f | buf: partial_header}}

  @doc "Frames an outgoing payload."
  @spec frame(iodata) :: iodata
  def frame(payload), do: [<<IO.iodata_length(payload)::32>> | payload]
end
