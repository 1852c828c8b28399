defmodule Symbiont.Error do
  @moduledoc """
  Why a Symbiont function failed: every public function that can fail returns
  `{:error, %Symbiont.Error{}}`, whose `reason` a caller matches on and whose `message` a
  person reads.

      iex> {:error, error} = Symbiont.Manifest.validate([[name: "a", python: "m.A"]])
      iex> {error.reason, error.details}
      {:invalid, %{agent: "a", field: :python}}
      iex> Exception.message(error)
      ~s(agent "a": expected :python to be "module:Class", got: "m.A")

  The struct is an exception: code that would rather raise raises it as it is
  (`raise error`). The `!` and `start_link` functions that validated options before it
  existed still raise `ArgumentError` with the same message. Interpolated
  (`"why: \#{error}"`), it reads as its message.

  ## Reasons

  `reason` is one atom from a small closed vocabulary; `details` holds what the message
  talks about (`%{agent: "orders"}`, `%{field: :max_wasm_hosts, value: 0}`), for code
  that wants it without parsing the sentence.

    * `:invalid` — an argument, option or spec breaks a rule; the message names the field,
      the value and what is allowed.
    * `:not_found` — no such agent, host, instance or file.
    * `:conflict` — a name is already taken, claimed or declared.
    * `:cannot_start` — an agent's code cannot run: its module is missing, it fails to
      import, its Wasm module does not load.
    * `:refused` — a rule in force forbids it: a pin, the control plane.
    * `:unavailable` — what it needs is not running, or did not answer in time.
    * `:failed` — it was tried and did not work: I/O, an error in a host.
  """

  @reasons [:invalid, :not_found, :conflict, :cannot_start, :refused, :unavailable, :failed]

  defexception [:reason, :message, details: %{}]

  @typedoc "One of the reasons listed in the moduledoc."
  @type reason ::
          :invalid | :not_found | :conflict | :cannot_start | :refused | :unavailable | :failed

  @typedoc "A failure: what kind (`reason`), a sentence for people, and what it is about."
  @type t :: %__MODULE__{reason: reason, message: String.t(), details: map}

  @doc """
  The reasons, in the order the moduledoc lists them.

      iex> Symbiont.Error.reasons()
      [:invalid, :not_found, :conflict, :cannot_start, :refused, :unavailable, :failed]
  """
  @spec reasons() :: [reason]
  def reasons, do: @reasons

  @doc """
  An error with `reason`, `message` and `details` (a map or keyword list).

      iex> error = Symbiont.Error.new(:not_found, ~s(no agent named "orders"), agent: "orders")
      iex> {error.reason, error.details}
      {:not_found, %{agent: "orders"}}
      iex> Exception.message(error)
      ~s(no agent named "orders")
  """
  @spec new(reason, String.t(), map | keyword) :: t
  def new(reason, message, details \\ %{})
      when reason in @reasons and is_binary(message) and (is_map(details) or is_list(details)) do
    %__MODULE__{reason: reason, message: message, details: Map.new(details)}
  end

  @doc """
  Turns an internal `{:error, message}` into `{:error, %Symbiont.Error{}}` with `reason`
  and `details`; `:ok`, `{:ok, value}` and an error that already is a `Symbiont.Error`
  pass through unchanged. An internal `{:error, {field, message}}` (a validator that
  knows which field is wrong) adds `field` to the details.

      iex> Symbiont.Error.wrap({:error, "expected :hold to be a positive integer, got: 0"}, :invalid, field: :hold, value: 0)
      {:error, %Symbiont.Error{reason: :invalid, message: "expected :hold to be a positive integer, got: 0", details: %{field: :hold, value: 0}}}
      iex> Symbiont.Error.wrap({:ok, 1}, :invalid)
      {:ok, 1}
      iex> Symbiont.Error.wrap(:ok, :invalid)
      :ok
      iex> {:error, error} = Symbiont.Error.wrap({:error, {:hold, "expected :hold to be a positive integer, got: 0"}}, :invalid, agent: "a")
      iex> error.details
      %{agent: "a", field: :hold}
      iex> already = {:error, Symbiont.Error.new(:conflict, "taken")}
      iex> Symbiont.Error.wrap(already, :invalid) == already
      true

  `reason` may also be a function of the message, for helpers whose messages mean
  different things:

      iex> reason = fn message -> if message =~ "no agent", do: :not_found, else: :invalid end
      iex> {:error, error} = Symbiont.Error.wrap({:error, "no agent named \\"x\\""}, reason)
      iex> error.reason
      :not_found
  """
  @spec wrap(
          :ok | {:ok, value} | {:error, String.t() | {atom, String.t()} | t},
          reason | (String.t() -> reason),
          map | keyword
        ) :: :ok | {:ok, value} | {:error, t}
        when value: term
  def wrap(result, reason, details \\ %{})
  def wrap(:ok, _reason, _details), do: :ok
  def wrap({:ok, _} = ok, _reason, _details), do: ok
  def wrap({:error, %__MODULE__{}} = error, _reason, _details), do: error

  def wrap({:error, {field, message}}, reason, details) when is_atom(field),
    do: wrap({:error, message}, reason, Map.put(Map.new(details), :field, field))

  def wrap({:error, message}, reason, details) when is_binary(message) and is_function(reason, 1),
    do: {:error, new(reason.(message), message, details)}

  def wrap({:error, message}, reason, details) when is_binary(message),
    do: {:error, new(reason, message, details)}
end

defimpl String.Chars, for: Symbiont.Error do
  # Interpolated, an error is its sentence: `"... (#{error})"` reads as before.
  def to_string(error), do: Exception.message(error)
end
