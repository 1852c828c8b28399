defmodule Symbiont.Host.Output do
  @moduledoc false
  # The bound on what a host's process prints (log frames, PROTOCOL.md §7): a token
  # bucket of lines and one of bytes, lines cut at `max_line` bytes, and one summary line
  # per `summary_ms` for what was dropped.
  #
  # The limit is applied twice. The host applies it before it sends anything (the
  # `output_limit` of `init`, §3): that saves the wire. The owner cannot trust the host
  # (a module's granted stdout, a buggy agent, code that writes frames itself), so it
  # applies it again to what it logs, with twice the rates and bursts: a host that keeps
  # to the limit never loses a line to the owner's timing (frames held back, then read
  # in one go), while one that does not still cannot flood the node's log.
  #
  # Tokens are counted in thousandths, so that a bucket refills exactly by the
  # millisecond.

  @defaults [
    lines_per_s: 100,
    burst_lines: 1_000,
    bytes_per_s: 65_536,
    burst_bytes: 1_048_576,
    max_line: 16_384,
    summary_ms: 5_000
  ]
  # Room for the marker the host adds to a line it cut (" [truncated ...]").
  @marker_room 64

  defstruct [:limit, :lines, :bytes, :at, dropped_lines: 0, dropped_bytes: 0, since: nil]

  @type limit :: %{
          lines_per_s: pos_integer,
          burst_lines: pos_integer,
          bytes_per_s: pos_integer,
          burst_bytes: pos_integer,
          max_line: pos_integer,
          summary_ms: pos_integer
        }
  @type t :: %__MODULE__{}

  @doc "The default limit, as a keyword list."
  @spec defaults() :: keyword
  def defaults, do: @defaults

  @doc """
  Validates an `:output_limit` (a keyword list of the keys of `defaults/0`, each a
  positive integer) over the `:output_limit` application env and the defaults.
  """
  @spec validate(term) :: {:ok, limit} | {:error, String.t()}
  def validate(opts) do
    with {:ok, app} <- keyword(Application.get_env(:symbiont, :output_limit, []), "config"),
         {:ok, opts} <- keyword(opts, "option") do
      limit = @defaults |> Keyword.merge(app) |> Keyword.merge(opts)

      with :ok <- known(limit), :ok <- positive(limit), :ok <- line_fits(limit) do
        {:ok, Map.new(limit)}
      end
    end
  end

  defp keyword(opts, what) do
    if is_list(opts) and Keyword.keyword?(opts),
      do: {:ok, opts},
      else:
        {:error,
         "expected the :output_limit #{what} to be a keyword list (#{keys()}), got: #{inspect(opts)}"}
  end

  defp keys, do: @defaults |> Keyword.keys() |> Enum.map_join(", ", &inspect/1)

  defp known(limit) do
    case Enum.find(Keyword.keys(limit), &(not Keyword.has_key?(@defaults, &1))) do
      nil -> :ok
      key -> {:error, "unknown key #{inspect(key)} in :output_limit, allowed: #{keys()}"}
    end
  end

  defp positive(limit) do
    case Enum.find(limit, fn {_k, v} -> not (is_integer(v) and v > 0) end) do
      nil ->
        :ok

      {k, v} ->
        {:error,
         "expected #{inspect(k)} of :output_limit to be a positive integer, got: #{inspect(v)}"}
    end
  end

  defp line_fits(limit) do
    if limit[:max_line] <= limit[:burst_bytes],
      do: :ok,
      else:
        {:error,
         "expected :max_line of :output_limit (#{limit[:max_line]}) to be at most its :burst_bytes " <>
           "(#{limit[:burst_bytes]}): a longer line could never be logged"}
  end

  @doc "The limit as the host gets it in `init` (§3): string keys."
  @spec to_wire(limit) :: map
  def to_wire(limit), do: Map.new(limit, fn {k, v} -> {Atom.to_string(k), v} end)

  @doc "Full buckets for `limit`, each `slack` times as large and as fast."
  @spec new(limit, pos_integer, integer) :: t
  def new(limit, slack, now_ms) do
    limit = %{
      limit
      | lines_per_s: limit.lines_per_s * slack,
        burst_lines: limit.burst_lines * slack,
        bytes_per_s: limit.bytes_per_s * slack,
        burst_bytes: limit.burst_bytes * slack
    }

    %__MODULE__{
      limit: limit,
      lines: limit.burst_lines * 1000,
      bytes: limit.burst_bytes * 1000,
      at: now_ms
    }
  end

  @doc """
  Takes one line of `size` bytes: `{:ok, out}` to log it, `{:drop, out}` when over the
  limit, `{:first_drop, out}` for the first line dropped since the last summary (the
  caller then asks for a `summary/2` in `summary_ms`).
  """
  @spec take(t, non_neg_integer, integer) :: {:ok | :drop | :first_drop, t}
  def take(%__MODULE__{limit: l} = out, size, now_ms) do
    elapsed = max(now_ms - out.at, 0)
    lines = min(out.lines + elapsed * l.lines_per_s, l.burst_lines * 1000)
    bytes = min(out.bytes + elapsed * l.bytes_per_s, l.burst_bytes * 1000)
    out = %{out | lines: lines, bytes: bytes, at: now_ms}

    if lines >= 1000 and bytes >= size * 1000 do
      {:ok, %{out | lines: lines - 1000, bytes: bytes - size * 1000}}
    else
      dropped = %{
        out
        | dropped_lines: out.dropped_lines + 1,
          dropped_bytes: out.dropped_bytes + size
      }

      if out.since, do: {:drop, dropped}, else: {:first_drop, %{dropped | since: now_ms}}
    end
  end

  @doc """
  The summary line of what was dropped since the first drop (`nil` for nothing), and the
  counts reset.
  """
  @spec summary(t, integer) :: {String.t() | nil, t}
  def summary(%__MODULE__{since: nil} = out, _now_ms), do: {nil, out}

  def summary(%__MODULE__{limit: l} = out, now_ms) do
    seconds = Float.round(max(now_ms - out.since, 1) / 1000, 1)

    text =
      "dropped #{count(out.dropped_lines)} lines (#{size(out.dropped_bytes)}) of output in the " <>
        "last #{seconds} s: over #{count(l.lines_per_s)} lines/s or #{size(l.bytes_per_s)}/s, " <>
        "twice the host's :output_limit, which its process did not keep to"

    {text, %{out | dropped_lines: 0, dropped_bytes: 0, since: nil}}
  end

  @doc """
  `line` cut to the limit's `max_line` bytes (at a character boundary), with a marker,
  when it is longer than that and the room for the host's own marker.
  """
  @spec cut(binary, limit | t) :: binary
  def cut(line, %__MODULE__{limit: l}), do: cut(line, l)

  def cut(line, %{max_line: max}) when byte_size(line) <= max + @marker_room, do: line

  def cut(line, %{max_line: max}) do
    head = binary_part(line, 0, max)
    head = binary_part(head, 0, byte_size(head) - partial(head))
    head <> " [truncated #{count(byte_size(line) - byte_size(head))} bytes]"
  end

  # The bytes of a UTF-8 character cut short at the end of `bin` (0 to 3).
  defp partial(bin) do
    n = byte_size(bin)
    tail = if n >= 3, do: binary_part(bin, n - 3, 3), else: bin

    tail
    |> :binary.bin_to_list()
    |> Enum.reverse()
    |> Enum.with_index(1)
    |> Enum.find_value(0, fn
      {b, _i} when b < 0x80 -> 0
      {b, i} when b >= 0xF0 -> if i < 4, do: i, else: 0
      {b, i} when b >= 0xE0 -> if i < 3, do: i, else: 0
      {b, i} when b >= 0xC0 -> if i < 2, do: i, else: 0
      _continuation -> nil
    end)
  end

  @doc "A count with thousands separators: `123,456`."
  @spec count(non_neg_integer) :: String.t()
  def count(n) do
    n
    |> Integer.to_string()
    |> String.reverse()
    |> String.replace(~r/(\d{3})(?=\d)/, "\\1,")
    |> String.reverse()
  end

  @doc "A size in bytes, KiB or MiB: `45.2 MiB`."
  @spec size(non_neg_integer) :: String.t()
  def size(bytes) when bytes < 1024, do: "#{bytes} bytes"
  def size(bytes) when bytes < 1024 * 1024, do: "#{Float.round(bytes / 1024, 1)} KiB"
  def size(bytes), do: "#{Float.round(bytes / (1024 * 1024), 1)} MiB"
end
