// Command openai-go is the go-openai example (../go-openai) written again with OpenAI's official Go SDK,
// github.com/openai/openai-go/v3: the same flags and environment, streamed and non-streamed chat with usage,
// plus a request with a tool, against a local OpenAI-compatible server (llama-server or Ollama).
//
// Where the official SDK behaves differently from go-openai against the local servers (main_test.go asserts each):
//   - Optional fields are param.Opt values, not `omitempty`: Temperature openai.Float(0) is sent as 0, so greedy
//     decoding needs no 0.01 stand-in (go-openai drops 0 and the server's default 0.8 applies).
//   - Two token-limit fields: MaxCompletionTokens (the one the SDK documents) and MaxTokens (deprecated there).
//     Ollama v0.24 reads only max_tokens and ignores max_completion_tokens; llama-server reads both. This example
//     sends max_tokens; -max-tokens-field max_completion_tokens shows Ollama ignoring the limit.
//   - Retries: connection errors, 408, 409, 429 and every 5xx are retried twice by default (0.5 s, 1 s backoff);
//     go-openai never retries. A local 5xx is rarely transient, so -max-retries sets option.WithMaxRetries.
//   - Errors are *openai.Error; its Error() says only "OpenAI API error: 401 Unauthorized". The server's message
//     is in apiErr.Message, which explain() adds (go-openai's error string carries the message itself).
//   - Streaming: NewStreaming returns no error; a failed request shows up as stream.Err() after Next() is false.
//     `data: [DONE]` ends the loop with Err() == nil (go-openai returns io.EOF). openai.ChatCompletionAccumulator
//     rebuilds the whole completion from the chunks and adds up usage from every chunk that carries it.
//   - Unknown response fields are kept: llama-server's `timings` is in resp.JSON.ExtraFields (go-openai drops it).
//   - openai.NewClient reads OPENAI_BASE_URL / OPENAI_API_KEY itself (and OPENAI_ORG_ID, OPENAI_PROJECT_ID,
//     OPENAI_CUSTOM_HEADERS, sent as headers to whatever server you point it at); its own default base URL is
//     api.openai.com. The explicit options below win over the environment.
//
// Run:  go run .            (llama-server on :8080)
//
//	go run . -base-url http://localhost:11434/v1 -model smollm2-135m     (Ollama)
//	go run . -mode tool      (a request with a tool; see ToolChat)
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// The lab's defaults: what `labkit up llamacpp` serves.
const (
	DefaultBaseURL = "http://localhost:8080/v1"
	DefaultAPIKey  = "sk-local-placeholder" // servers without --api-key ignore it
	DefaultModel   = "smollm2-135m"
	DefaultPrompt  = "你好，请你介绍一下自己"
	ToolPrompt     = "What is the weather in Paris?" // the default prompt of -mode tool
)

// Options is everything one run needs; flags override the environment, which overrides the defaults.
type Options struct {
	BaseURL        string
	APIKey         string
	Model          string
	Prompt         string
	MaxTokens      int
	MaxTokensField string // "max_tokens" (both servers) or "max_completion_tokens" (ignored by Ollama)
	Seed           int
	Mode           string // "both", "stream", "chat" or "tool"
	MaxRetries     int    // option.WithMaxRetries; the SDK's default is 2
	JSON           bool
	Timeout        time.Duration
}

// Usage is the server's token counts.
type Usage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}

// ToolCall is one function call the model asked for.
type ToolCall struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// Result is what one call produced: the text, why it stopped, and the server's token counts.
type Result struct {
	Mode         string     `json:"mode"`
	Model        string     `json:"model"`
	Content      string     `json:"content"`
	FinishReason string     `json:"finish_reason"`
	Chunks       int        `json:"chunks"`
	UsageChunks  int        `json:"usage_chunks,omitempty"` // stream: chunks that carried usage
	Usage        Usage      `json:"usage"`
	ToolCalls    []ToolCall `json:"tool_calls,omitempty"`
	ServerExtras []string   `json:"server_extras,omitempty"` // top-level response fields the SDK does not know
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

// ParseOptions reads flags (args without the program name) on top of the environment and the lab's defaults.
func ParseOptions(args []string, stderr io.Writer) (Options, error) {
	var o Options
	fs := flag.NewFlagSet("openai-go", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.BaseURL, "base-url", envOr("OPENAI_BASE_URL", DefaultBaseURL), "OpenAI-compatible base URL, ending in /v1 (env OPENAI_BASE_URL)")
	fs.StringVar(&o.APIKey, "api-key", envOr("OPENAI_API_KEY", DefaultAPIKey), "API key; a placeholder unless the server runs with --api-key (env OPENAI_API_KEY)")
	fs.StringVar(&o.Model, "model", envOr("LABKIT_MODEL_NAME", DefaultModel), "model name; Ollama needs the real one (env LABKIT_MODEL_NAME)")
	fs.StringVar(&o.Prompt, "prompt", "", "user message (default "+fmt.Sprintf("%q", DefaultPrompt)+", or "+fmt.Sprintf("%q", ToolPrompt)+" for -mode tool)")
	fs.IntVar(&o.MaxTokens, "max-tokens", 64, "token limit sent with every request")
	fs.StringVar(&o.MaxTokensField, "max-tokens-field", "max_tokens", "JSON field carrying the limit: max_tokens or max_completion_tokens")
	fs.IntVar(&o.Seed, "seed", 42, "sampling seed")
	fs.StringVar(&o.Mode, "mode", "both", "stream, chat, both (stream then chat) or tool")
	fs.IntVar(&o.MaxRetries, "max-retries", 2, "retries after a connection error, 408, 409, 429 or 5xx (the SDK's default: 2)")
	fs.BoolVar(&o.JSON, "json", false, "print one JSON object per result instead of text")
	fs.DurationVar(&o.Timeout, "timeout", 60*time.Second, "timeout for the whole run, retries included")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch o.Mode {
	case "both", "stream", "chat", "tool":
	default:
		return o, fmt.Errorf("-mode must be stream, chat, both or tool, not %q", o.Mode)
	}
	if o.MaxTokens <= 0 {
		return o, errors.New("-max-tokens must be positive: a local model may otherwise generate until the context is full")
	}
	if o.MaxTokensField != "max_tokens" && o.MaxTokensField != "max_completion_tokens" {
		return o, fmt.Errorf("-max-tokens-field must be max_tokens or max_completion_tokens, not %q", o.MaxTokensField)
	}
	if o.MaxRetries < 0 {
		return o, errors.New("-max-retries must be 0 or more") // option.WithMaxRetries panics on a negative value
	}
	if o.Prompt == "" {
		o.Prompt = DefaultPrompt
		if o.Mode == "tool" {
			o.Prompt = ToolPrompt
		}
	}
	return o, nil
}

// NewClient points the SDK at our server. The explicit base URL and key win over what openai.NewClient reads
// from the environment by itself; extra options (a middleware, say) go last.
func NewClient(o Options, extra ...option.RequestOption) openai.Client {
	opts := []option.RequestOption{
		option.WithBaseURL(o.BaseURL),
		option.WithAPIKey(o.APIKey), // sent as "Authorization: Bearer <key>"
		option.WithMaxRetries(o.MaxRetries),
	}
	return openai.NewClient(append(opts, extra...)...)
}

// Request builds the chat request both chat calls send.
func Request(o Options) openai.ChatCompletionNewParams {
	p := openai.ChatCompletionNewParams{
		Model:    o.Model,
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(o.Prompt)},
		// A param.Opt: 0 is sent as "temperature": 0 (greedy), unlike go-openai's omitempty float.
		Temperature: openai.Float(0),
		Seed:        openai.Int(int64(o.Seed)),
	}
	if o.MaxTokensField == "max_completion_tokens" {
		p.MaxCompletionTokens = openai.Int(int64(o.MaxTokens)) // Ollama v0.24 ignores this field
	} else {
		p.MaxTokens = openai.Int(int64(o.MaxTokens)) // deprecated in the SDK, but read by both servers
	}
	return p
}

func usageOf(u openai.CompletionUsage) Usage {
	return Usage{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens, TotalTokens: u.TotalTokens}
}

// extras lists the top-level response fields the SDK kept but does not model (llama-server's "timings").
func extras(c *openai.ChatCompletion) []string {
	var names []string
	for name := range c.JSON.ExtraFields {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// Chat sends one non-streamed request.
func Chat(ctx context.Context, client *openai.Client, o Options) (Result, error) {
	resp, err := client.Chat.Completions.New(ctx, Request(o))
	if err != nil {
		return Result{}, explain(err, o)
	}
	if len(resp.Choices) == 0 {
		return Result{}, fmt.Errorf("the server at %s answered with no choices", o.BaseURL)
	}
	c := resp.Choices[0]
	return Result{Mode: "chat", Model: resp.Model, Content: c.Message.Content, FinishReason: c.FinishReason,
		Chunks: 1, Usage: usageOf(resp.Usage), ServerExtras: extras(resp)}, nil
}

// Stream sends one streamed request, calling onDelta with each piece of text as it arrives.
func Stream(ctx context.Context, client *openai.Client, o Options, onDelta func(string)) (Result, error) {
	req := Request(o)
	// usage arrives in a last chunk with no choices, only when asked for
	req.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream := client.Chat.Completions.NewStreaming(ctx, req) // no error here: a failed request is stream.Err()
	defer stream.Close()
	acc := openai.ChatCompletionAccumulator{}
	res := Result{Mode: "stream"}
	for stream.Next() { // false after `data: [DONE]` (Err() == nil) or on an error
		chunk := stream.Current()
		if !acc.AddChunk(chunk) {
			return res, fmt.Errorf("the stream from %s sent a chunk the accumulator rejects: %s", o.BaseURL, chunk.RawJSON())
		}
		res.Chunks++
		if chunk.JSON.Usage.Valid() { // Usage is a value: absent and null both leave it zero
			res.UsageChunks++
		}
		for _, c := range chunk.Choices {
			if c.Delta.Content != "" && onDelta != nil {
				onDelta(c.Delta.Content)
			}
		}
	}
	if err := stream.Err(); err != nil {
		return res, explain(err, o)
	}
	if len(acc.Choices) == 0 {
		return res, fmt.Errorf("the stream from %s carried no choices", o.BaseURL)
	}
	c := acc.Choices[0]
	res.Model, res.Content, res.FinishReason = acc.Model, c.Message.Content, c.FinishReason
	res.Usage = usageOf(acc.Usage) // the sum over chunks: right while servers send usage once
	return res, nil
}

// WeatherTool is the tool the tool request offers: a get_weather(city) function.
func WeatherTool() openai.ChatCompletionToolUnionParam {
	return openai.ChatCompletionFunctionTool(openai.FunctionDefinitionParam{
		Name:        "get_weather",
		Description: openai.String("Get the current weather in a city"),
		Parameters: openai.FunctionParameters{
			"type":       "object",
			"properties": map[string]any{"city": map[string]any{"type": "string"}},
			"required":   []string{"city"},
		},
	})
}

// ToolChat sends the chat request with the weather tool. Whether a call comes back is up to the server and model:
// the tiny model does not call tools by itself on the lab's default servers; llama-server with a tool-aware chat
// template (lesson 07) is what makes a real call. Ollama refuses tools for a model whose template has none (400).
func ToolChat(ctx context.Context, client *openai.Client, o Options) (Result, error) {
	req := Request(o)
	req.Tools = []openai.ChatCompletionToolUnionParam{WeatherTool()}
	resp, err := client.Chat.Completions.New(ctx, req)
	if err != nil {
		return Result{}, explain(err, o)
	}
	if len(resp.Choices) == 0 {
		return Result{}, fmt.Errorf("the server at %s answered with no choices", o.BaseURL)
	}
	c := resp.Choices[0]
	res := Result{Mode: "tool", Model: resp.Model, Content: c.Message.Content, FinishReason: c.FinishReason,
		Chunks: 1, Usage: usageOf(resp.Usage), ServerExtras: extras(resp)}
	for _, tc := range c.Message.ToolCalls {
		res.ToolCalls = append(res.ToolCalls, ToolCall{Name: tc.Function.Name, Arguments: tc.Function.Arguments})
	}
	return res, nil
}

// explain adds what to do to the errors learners actually meet. *openai.Error's own text is only the status.
func explain(err error, o Options) error {
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) {
		return fmt.Errorf("request to %s failed (is the server up? `labkit up` starts it): %w", o.BaseURL, err)
	}
	said := fmt.Sprintf("the server said %q", apiErr.Message)
	switch {
	case apiErr.StatusCode == http.StatusUnauthorized:
		return fmt.Errorf("401 from %s: %s (the server checks API keys: pass the right one with -api-key or OPENAI_API_KEY): %w",
			o.BaseURL, said, err)
	case apiErr.StatusCode == http.StatusNotFound:
		return fmt.Errorf("404 from %s: %s (does it serve model %q? Ollama needs the exact name): %w", o.BaseURL, said, o.Model, err)
	case strings.Contains(apiErr.Message, "does not support tools"):
		return fmt.Errorf("%d from %s: %s (Ollama refuses tools for a model whose template has none; lesson 07 "+
			"serves one with a tool-aware template on llama-server): %w", apiErr.StatusCode, o.BaseURL, said, err)
	default:
		return fmt.Errorf("HTTP %d from %s: %s: %w", apiErr.StatusCode, o.BaseURL, said, err)
	}
}

func report(w io.Writer, r Result, asJSON bool) error {
	if asJSON {
		return json.NewEncoder(w).Encode(r)
	}
	if r.Mode == "stream" {
		fmt.Fprintln(w)
	} else {
		fmt.Fprintln(w, r.Content)
	}
	for _, tc := range r.ToolCalls {
		fmt.Fprintf(w, "tool call: %s(%s)\n", tc.Name, tc.Arguments)
	}
	_, err := fmt.Fprintf(w, "finish_reason=%s chunks=%d usage: prompt=%d completion=%d total=%d extra fields=%v\n",
		r.FinishReason, r.Chunks, r.Usage.PromptTokens, r.Usage.CompletionTokens, r.Usage.TotalTokens, r.ServerExtras)
	return err
}

// Run is main without the exit: parse, call, print; every failure comes back as an error.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := ParseOptions(args, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	client := NewClient(o)
	if !o.JSON {
		fmt.Fprintf(stdout, "base URL %s, model %s\n", o.BaseURL, o.Model)
	}
	type call struct {
		mode string
		do   func() (Result, error)
	}
	var calls []call
	if o.Mode == "both" || o.Mode == "stream" {
		var onDelta func(string)
		if !o.JSON {
			onDelta = func(s string) { fmt.Fprint(stdout, s) }
		}
		calls = append(calls, call{"stream", func() (Result, error) { return Stream(ctx, &client, o, onDelta) }})
	}
	if o.Mode == "both" || o.Mode == "chat" {
		calls = append(calls, call{"chat", func() (Result, error) { return Chat(ctx, &client, o) }})
	}
	if o.Mode == "tool" {
		calls = append(calls, call{"tool", func() (Result, error) { return ToolChat(ctx, &client, o) }})
	}
	for _, c := range calls {
		if !o.JSON {
			fmt.Fprintf(stdout, "== %s ==\n", c.mode)
		}
		res, err := c.do()
		if err != nil {
			return err
		}
		if err := report(stdout, res, o.JSON); err != nil {
			return err
		}
	}
	return nil
}

func main() {
	if err := Run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
