defmodule Symbiont.Host.Out do
  @moduledoc false
  # Frames on their way to a host's port, written in batches. The host's owner and its
  # agents (Symbiont.Agent.Server) each keep one and write to the same port: a burst of
  # calls, casts or events costs one Port.command, not one each.
  #
  # Every GenServer callback of a writer ends with `reply/2`: while frames wait it asks for
  # a timeout of 0, which fires once the mailbox is empty, and the `:timeout` message
  # flushes them; after 64 KiB or 64 callbacks they are written at once. A lone frame is
  # written as soon as the writer has nothing else to do.

  @max_bytes 65_536
  @max_age 64

  defstruct port: nil, frames: [], bytes: 0, age: 0

  @type t :: %__MODULE__{port: port | nil, frames: [iodata], bytes: non_neg_integer}

  @doc "A batch for `port` (`nil`: frames are dropped until `to/2` gives one)."
  @spec new(port | nil) :: t
  def new(port \\ nil), do: %__MODULE__{port: port}

  @doc "Drops what waits and writes to `port` from now on."
  @spec to(t, port | nil) :: t
  def to(%__MODULE__{}, port), do: new(port)

  @doc "Queues one framed frame."
  @spec emit(t, iodata) :: t
  def emit(%__MODULE__{port: nil} = out, _iodata), do: out

  def emit(out, iodata) do
    out = %{out | frames: [iodata | out.frames], bytes: out.bytes + IO.iodata_length(iodata)}
    if out.bytes >= @max_bytes, do: flush(out), else: out
  end

  @doc "Takes the frames in `frames` (a set of frames as they were emitted) out of the batch."
  @spec drop(t, MapSet.t()) :: t
  def drop(out, frames) do
    if MapSet.size(frames) == 0 do
      out
    else
      kept = Enum.reject(out.frames, &MapSet.member?(frames, &1))
      %{out | frames: kept, bytes: Enum.reduce(kept, 0, &(IO.iodata_length(&1) + &2))}
    end
  end

  @doc "Whether `emit(out, iodata)` would write the batch at once."
  @spec flushes?(t, iodata) :: boolean
  def flushes?(%__MODULE__{port: nil}, _iodata), do: false
  def flushes?(out, iodata), do: out.bytes + IO.iodata_length(iodata) >= @max_bytes

  @doc "Whether `timeout(out)` would write the batch at once."
  @spec due?(t) :: boolean
  def due?(%__MODULE__{frames: []}), do: false
  def due?(out), do: out.age + 1 >= @max_age

  @doc """
  Writes what waits. A port closed under us (its process died; the owner learns it from
  the exit status) drops the batch: the frames were for a dead process.
  """
  @spec flush(t) :: t
  def flush(%__MODULE__{frames: []} = out), do: out

  def flush(%__MODULE__{port: port} = out) do
    try do
      Port.command(port, :lists.reverse(out.frames))
    rescue
      ArgumentError -> :ok
    end

    %{out | frames: [], bytes: 0, age: 0}
  end

  @doc """
  The GenServer timeout to return with `out`: 0 while frames wait (flush on `:timeout`),
  `:infinity` otherwise; flushes at once after #{@max_age} callbacks.
  """
  @spec timeout(t) :: {t, 0 | :infinity}
  def timeout(%__MODULE__{frames: []} = out), do: {out, :infinity}

  def timeout(out) do
    out = %{out | age: out.age + 1}
    if out.age >= @max_age, do: {flush(out), :infinity}, else: {out, 0}
  end

  @doc """
  Adds the timeout to a callback's result, for a state that keeps its batch in `:out`.
  """
  @spec reply({:noreply, map} | {:reply, term, map}) :: tuple
  def reply({:noreply, state}) do
    {out, timeout} = timeout(state.out)
    {:noreply, %{state | out: out}, timeout}
  end

  def reply({:reply, reply, state}) do
    {out, timeout} = timeout(state.out)
    {:reply, reply, %{state | out: out}, timeout}
  end
end
