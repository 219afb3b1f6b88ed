package translate

import (
	"errors"
	"strings"
	"testing"

	"github.com/relaygw/relay/workers/wire"
)

func TestAnthropicToOpenAIRequest(t *testing.T) {
	tests := []struct {
		name  string
		model string
		in    string
		want  string
	}{
		{
			name:  "minimal",
			model: "gpt-4o",
			in:    `{"model":"claude-sonnet","max_tokens":100,"messages":[{"role":"user","content":"Hello"}]}`,
			want:  `{"model":"gpt-4o","messages":[{"role":"user","content":"Hello"}],"max_tokens":100}`,
		},
		{
			name: "keeps model when upstream model is empty",
			in:   `{"model":"claude-sonnet","max_tokens":1,"messages":[]}`,
			want: `{"model":"claude-sonnet","messages":[],"max_tokens":1}`,
		},
		{
			name:  "system sampling stream and metadata",
			model: "gpt-4o",
			in: `{"model":"claude-sonnet","system":"Be brief.","max_tokens":256,"temperature":0.5,"top_p":0.9,"top_k":40,
				"stop_sequences":["END",""],"stream":true,"metadata":{"user_id":"u-1"},
				"thinking":{"type":"enabled","budget_tokens":1024},"service_tier":"auto",
				"messages":[{"role":"user","content":"Hi"}]}`,
			want: `{"model":"gpt-4o","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}],
				"max_tokens":256,"temperature":0.5,"top_p":0.9,"stop":["END"],
				"stream":true,"stream_options":{"include_usage":true},"user":"u-1"}`,
		},
		{
			name:  "system text blocks are joined",
			model: "m",
			in: `{"system":[{"type":"text","text":"You are \"helpful\".","cache_control":{"type":"ephemeral"}},{"type":"text","text":"Line\ntwo"}],
				"messages":[{"role":"user","content":[{"type":"text","text":"Hi","cache_control":{"type":"ephemeral"}}]}]}`,
			want: `{"model":"m","messages":[{"role":"system","content":"You are \"helpful\".\nLine\ntwo"},{"role":"user","content":"Hi"}]}`,
		},
		{
			name:  "images and several text blocks become parts",
			model: "m",
			in: `{"messages":[{"role":"user","content":[
				{"type":"text","text":"What is this?"},
				{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}},
				{"type":"image","source":{"type":"url","url":"https://example.com/cat.jpg"}},
				{"type":"image","source":{"type":"file","file_id":"file_1"}}]}]}`,
			want: `{"model":"m","messages":[{"role":"user","content":[
				{"type":"text","text":"What is this?"},
				{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}},
				{"type":"image_url","image_url":{"url":"https://example.com/cat.jpg"}}]}]}`,
		},
		{
			name:  "documents",
			model: "m",
			in: `{"messages":[{"role":"user","content":[
				{"type":"document","title":"report.pdf","source":{"type":"base64","media_type":"application/pdf","data":"JVBERi0="}},
				{"type":"document","source":{"type":"text","media_type":"text/plain","data":"plain text"}}]}]}`,
			want: `{"model":"m","messages":[{"role":"user","content":[
				{"type":"file","file":{"filename":"report.pdf","file_data":"data:application/pdf;base64,JVBERi0="}},
				{"type":"text","text":"plain text"}]}]}`,
		},
		{
			name:  "tool use conversation",
			model: "gpt-4o",
			in: `{"model":"claude-sonnet","max_tokens":1024,
				"tools":[{"name":"get_weather","description":"Weather for a city","input_schema":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}},
				         {"type":"web_search_20250305","name":"web_search","max_uses":3}],
				"tool_choice":{"type":"any"},
				"messages":[
				 {"role":"user","content":"Weather in Paris and Rome?"},
				 {"role":"assistant","content":[
				   {"type":"thinking","thinking":"hmm","signature":"sig"},
				   {"type":"text","text":"Checking."},
				   {"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}},
				   {"type":"tool_use","id":"toolu_2","name":"get_weather","input":{"city":"Rome"}}]},
				 {"role":"user","content":[
				   {"type":"tool_result","tool_use_id":"toolu_1","content":"18C"},
				   {"type":"tool_result","tool_use_id":"toolu_2","content":[{"type":"text","text":"21C"},{"type":"text","text":"sunny"}],"is_error":false},
				   {"type":"text","text":"Thanks"}]}]}`,
			want: `{"model":"gpt-4o","messages":[
				 {"role":"user","content":"Weather in Paris and Rome?"},
				 {"role":"assistant","content":"Checking.","tool_calls":[
				   {"id":"toolu_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},
				   {"id":"toolu_2","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Rome\"}"}}]},
				 {"role":"tool","tool_call_id":"toolu_1","content":"18C"},
				 {"role":"tool","tool_call_id":"toolu_2","content":"21C\nsunny"},
				 {"role":"user","content":"Thanks"}],
				"tools":[{"type":"function","function":{"name":"get_weather","description":"Weather for a city","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}],
				"tool_choice":"required","max_tokens":1024}`,
		},
		{
			name:  "assistant with only tool use has null content",
			model: "m",
			in: `{"tools":[{"name":"f","input_schema":{"type":"object"}}],"tool_choice":{"type":"tool","name":"f","disable_parallel_tool_use":true},
				"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"f","input":{}}]},
				{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1"}]}]}`,
			want: `{"model":"m","messages":[
				{"role":"assistant","content":null,"tool_calls":[{"id":"t1","type":"function","function":{"name":"f","arguments":"{}"}}]},
				{"role":"tool","tool_call_id":"t1","content":""}],
				"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}],
				"tool_choice":{"type":"function","function":{"name":"f"}},"parallel_tool_calls":false}`,
		},
		{
			name:  "tool result images move to the user message",
			model: "m",
			in: `{"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":[
				{"type":"text","text":"screenshot"},{"type":"image","source":{"type":"url","url":"https://x/y.png"}}]}]}]}`,
			want: `{"model":"m","messages":[{"role":"tool","tool_call_id":"t1","content":"screenshot"},
				{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]}]}`,
		},
		{
			name:  "only server tools drops tools and tool choice",
			model: "m",
			in:    `{"tools":[{"type":"web_search_20250305","name":"web_search"}],"tool_choice":{"type":"auto"},"messages":[{"role":"user","content":"q"}]}`,
			want:  `{"model":"m","messages":[{"role":"user","content":"q"}]}`,
		},
		{
			name:  "assistant string and thinking only",
			model: "m",
			in:    `{"messages":[{"role":"assistant","content":"Sure"},{"role":"assistant","content":[{"type":"redacted_thinking","data":"x"}]}]}`,
			want:  `{"model":"m","messages":[{"role":"assistant","content":"Sure"},{"role":"assistant","content":""}]}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := AnthropicToOpenAIRequest([]byte(tt.in), tt.model, testDepth)
			if err != nil {
				t.Fatalf("AnthropicToOpenAIRequest(%s) error: %v", tt.name, err)
			}
			assertJSONEqual(t, "AnthropicToOpenAIRequest", got, tt.want)
		})
	}
}

func TestOpenAIToAnthropicRequest(t *testing.T) {
	tests := []struct {
		name  string
		model string
		in    string
		want  string
	}{
		{
			name:  "minimal gets default max tokens",
			model: "claude-sonnet-4-5",
			in:    `{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}]}`,
			want:  `{"model":"claude-sonnet-4-5","max_tokens":4096,"messages":[{"role":"user","content":[{"type":"text","text":"Hi"}]}]}`,
		},
		{
			name:  "system developer and sampling",
			model: "c",
			in: `{"model":"gpt-4o","max_tokens":10,"max_completion_tokens":300,"temperature":1.5,"top_p":0.5,
				"stop":"END","stream":true,"stream_options":{"include_usage":true},"user":"u-9","n":1,"seed":7,
				"frequency_penalty":0.1,"response_format":{"type":"text"},
				"messages":[{"role":"system","content":"Be brief."},{"role":"developer","content":[{"type":"text","text":"Use French."}]},
				{"role":"user","content":"Hi"}]}`,
			want: `{"model":"c","max_tokens":300,
				"system":[{"type":"text","text":"Be brief."},{"type":"text","text":"Use French."}],
				"messages":[{"role":"user","content":[{"type":"text","text":"Hi"}]}],
				"temperature":1,"top_p":0.5,"stop_sequences":["END"],"stream":true,"metadata":{"user_id":"u-9"}}`,
		},
		{
			name:  "single system message is a string",
			model: "c",
			in:    `{"max_tokens":5,"temperature":0.2,"stop":["a","","b"],"messages":[{"role":"system","content":"S"},{"role":"user","content":"Hi"}]}`,
			want: `{"model":"c","max_tokens":5,"system":"S","messages":[{"role":"user","content":[{"type":"text","text":"Hi"}]}],
				"temperature":0.2,"stop_sequences":["a","b"]}`,
		},
		{
			name:  "tool conversation merges tool results",
			model: "c",
			in: `{"tools":[{"type":"function","function":{"name":"get_weather","description":"Weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}},
				          {"type":"function","function":{"name":"noop"}}],
				"tool_choice":"required","parallel_tool_calls":false,
				"messages":[
				 {"role":"user","content":"Weather?"},
				 {"role":"assistant","content":null,"tool_calls":[
				   {"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}},
				   {"id":"call_2","type":"function","function":{"name":"get_weather","arguments":"not json"}},
				   {"id":"call_3","type":"function","function":{"name":"noop","arguments":""}}]},
				 {"role":"tool","tool_call_id":"call_1","content":"18C"},
				 {"role":"tool","tool_call_id":"call_2","content":[{"type":"text","text":"21C"}]},
				 {"role":"tool","tool_call_id":"call_3","content":""},
				 {"role":"user","content":"Thanks"}]}`,
			want: `{"model":"c","max_tokens":4096,"messages":[
				 {"role":"user","content":[{"type":"text","text":"Weather?"}]},
				 {"role":"assistant","content":[
				   {"type":"tool_use","id":"call_1","name":"get_weather","input":{"city":"Paris"}},
				   {"type":"tool_use","id":"call_2","name":"get_weather","input":{"raw":"not json"}},
				   {"type":"tool_use","id":"call_3","name":"noop","input":{}}]},
				 {"role":"user","content":[
				   {"type":"tool_result","tool_use_id":"call_1","content":"18C"},
				   {"type":"tool_result","tool_use_id":"call_2","content":"21C"},
				   {"type":"tool_result","tool_use_id":"call_3"},
				   {"type":"text","text":"Thanks"}]}],
				"tools":[{"name":"get_weather","description":"Weather","input_schema":{"type":"object","properties":{"city":{"type":"string"}}}},
				         {"name":"noop","input_schema":{"type":"object","properties":{}}}],
				"tool_choice":{"type":"any","disable_parallel_tool_use":true}}`,
		},
		{
			name:  "named tool choice and assistant text with tool call",
			model: "c",
			in: `{"tools":[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}},{"type":"custom","custom":{"name":"g"}}],
				"tool_choice":{"type":"function","function":{"name":"f"}},
				"messages":[{"role":"assistant","content":[{"type":"text","text":"Let me check."},{"type":"refusal","refusal":"no"}],
				"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"[1]"}}]}]}`,
			want: `{"model":"c","max_tokens":4096,"messages":[{"role":"assistant","content":[
				{"type":"text","text":"Let me check."},{"type":"text","text":"no"},
				{"type":"tool_use","id":"c1","name":"f","input":{"raw":"[1]"}}]}],
				"tools":[{"name":"f","input_schema":{"type":"object"}}],"tool_choice":{"type":"tool","name":"f"}}`,
		},
		{
			name:  "images and files",
			model: "c",
			in: `{"messages":[{"role":"user","content":[
				{"type":"text","text":"Look"},
				{"type":"image_url","image_url":{"url":"data:image/jpeg;base64,/9j/4AAQ","detail":"high"}},
				{"type":"image_url","image_url":{"url":"https://example.com/a.png"}},
				{"type":"image_url","image_url":"https://example.com/legacy.png"},
				{"type":"image_url","image_url":{"url":"data:image/png,raw"}},
				{"type":"file","file":{"filename":"a.pdf","file_data":"data:application/pdf;base64,JVBERi0="}},
				{"type":"file","file":{"file_id":"file-1"}},
				{"type":"input_audio","input_audio":{"data":"x","format":"wav"}}]}]}`,
			want: `{"model":"c","max_tokens":4096,"messages":[{"role":"user","content":[
				{"type":"text","text":"Look"},
				{"type":"image","source":{"type":"base64","media_type":"image/jpeg","data":"/9j/4AAQ"}},
				{"type":"image","source":{"type":"url","url":"https://example.com/a.png"}},
				{"type":"image","source":{"type":"url","url":"https://example.com/legacy.png"}},
				{"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"JVBERi0="}}]}]}`,
		},
		{
			name:  "empty messages are dropped and same roles merge",
			model: "c",
			in: `{"messages":[{"role":"user","content":"a"},{"role":"user","content":[{"type":"text","text":"b"}]},
				{"role":"assistant","content":""},{"role":"function","name":"f","content":"x"},{"role":"user","content":"c"}]}`,
			want: `{"model":"c","max_tokens":4096,"messages":[{"role":"user","content":[
				{"type":"text","text":"a"},{"type":"text","text":"b"},{"type":"text","text":"c"}]}]}`,
		},
		{
			name:  "tool choice none without parallel flag",
			model: "c",
			in:    `{"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"none","parallel_tool_calls":false,"messages":[]}`,
			want:  `{"model":"c","max_tokens":4096,"messages":[],"tools":[{"name":"f","input_schema":{"type":"object","properties":{}}}],"tool_choice":{"type":"none"}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := OpenAIToAnthropicRequest([]byte(tt.in), tt.model, testDepth)
			if err != nil {
				t.Fatalf("OpenAIToAnthropicRequest(%s) error: %v", tt.name, err)
			}
			assertJSONEqual(t, "OpenAIToAnthropicRequest", got, tt.want)
		})
	}
}

func TestRequestErrors(t *testing.T) {
	convs := []struct {
		name string
		fn   func([]byte, string, int) ([]byte, error)
	}{
		{name: "AnthropicToOpenAIRequest", fn: AnthropicToOpenAIRequest},
		{name: "OpenAIToAnthropicRequest", fn: OpenAIToAnthropicRequest},
	}
	inputs := []struct {
		name string
		in   string
	}{
		{name: "not json", in: `{"model":`},
		{name: "array", in: `[1,2]`},
		{name: "string", in: `"x"`},
		{name: "empty", in: ``},
		{name: "messages not array", in: `{"messages":{"role":"user"}}`},
		{name: "too deep", in: `{"model":"m","messages":[{"role":"user","content":` + strings.Repeat("[", 1<<20)},
		{name: "too deep closed", in: `{"x":` + strings.Repeat(`{"a":`, testDepth) + "1" + strings.Repeat("}", testDepth+1)},
	}
	for _, c := range convs {
		for _, in := range inputs {
			t.Run(c.name+"/"+in.name, func(t *testing.T) {
				got, err := c.fn([]byte(in.in), "m", testDepth)
				if !errors.Is(err, ErrInvalidBody) {
					t.Errorf("%s(%.40q) = %s, %v; want error wrapping ErrInvalidBody", c.name, in.in, got, err)
				}
				if deep := strings.HasPrefix(in.name, "too deep"); deep != errors.Is(err, wire.ErrTooDeep) {
					t.Errorf("%s(%.40q) = %v; want wire.ErrTooDeep: %v", c.name, in.in, err, deep)
				}
			})
		}
	}
}

// TestRequestRoundTrip converts a request to the other format and back; what
// survives is the mapped subset, normalised (string content becomes blocks).
func TestRequestRoundTrip(t *testing.T) {
	t.Run("anthropic", func(t *testing.T) {
		tests := []struct {
			name, in, want string
		}{
			{
				name: "tools and results",
				in: `{"model":"a","max_tokens":50,"system":"S","temperature":0.3,"stop_sequences":["X"],"stream":true,"metadata":{"user_id":"u"},
					"tools":[{"name":"f","description":"d","input_schema":{"type":"object","properties":{"q":{"type":"string"}}}}],
					"tool_choice":{"type":"tool","name":"f"},
					"messages":[{"role":"user","content":"q?"},
					{"role":"assistant","content":[{"type":"text","text":"ok"},{"type":"tool_use","id":"t1","name":"f","input":{"q":"x"}}]},
					{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"r"},{"type":"text","text":"more"},
					  {"type":"image","source":{"type":"base64","media_type":"image/gif","data":"R0lG"}}]}]}`,
				want: `{"model":"a","max_tokens":50,"system":"S","temperature":0.3,"stop_sequences":["X"],"stream":true,"metadata":{"user_id":"u"},
					"tools":[{"name":"f","description":"d","input_schema":{"type":"object","properties":{"q":{"type":"string"}}}}],
					"tool_choice":{"type":"tool","name":"f"},
					"messages":[{"role":"user","content":[{"type":"text","text":"q?"}]},
					{"role":"assistant","content":[{"type":"text","text":"ok"},{"type":"tool_use","id":"t1","name":"f","input":{"q":"x"}}]},
					{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"r"},{"type":"text","text":"more"},
					  {"type":"image","source":{"type":"base64","media_type":"image/gif","data":"R0lG"}}]}]}`,
			},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				mid, err := AnthropicToOpenAIRequest([]byte(tt.in), "", testDepth)
				if err != nil {
					t.Fatalf("AnthropicToOpenAIRequest: %v", err)
				}
				got, err := OpenAIToAnthropicRequest(mid, "", testDepth)
				if err != nil {
					t.Fatalf("OpenAIToAnthropicRequest(%s): %v", mid, err)
				}
				assertJSONEqual(t, "round trip", got, tt.want)
			})
		}
	})
	t.Run("openai", func(t *testing.T) {
		tests := []struct {
			name, in, want string
		}{
			{
				name: "tools and results",
				in: `{"model":"o","max_tokens":50,"temperature":0.3,"top_p":1,"stop":["X"],"user":"u",
					"tools":[{"type":"function","function":{"name":"f","description":"d","parameters":{"type":"object"}}}],"tool_choice":"auto",
					"messages":[{"role":"system","content":"S"},{"role":"user","content":"q?"},
					{"role":"assistant","content":"ok","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"q\":\"x\"}"}}]},
					{"role":"tool","tool_call_id":"c1","content":"r"},
					{"role":"user","content":[{"type":"text","text":"more"},{"type":"image_url","image_url":{"url":"https://e/x.png"}}]}]}`,
				want: `{"model":"o","max_tokens":50,"temperature":0.3,"top_p":1,"stop":["X"],"user":"u",
					"tools":[{"type":"function","function":{"name":"f","description":"d","parameters":{"type":"object"}}}],"tool_choice":"auto",
					"messages":[{"role":"system","content":"S"},{"role":"user","content":"q?"},
					{"role":"assistant","content":"ok","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"q\":\"x\"}"}}]},
					{"role":"tool","tool_call_id":"c1","content":"r"},
					{"role":"user","content":[{"type":"text","text":"more"},{"type":"image_url","image_url":{"url":"https://e/x.png"}}]}]}`,
			},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				mid, err := OpenAIToAnthropicRequest([]byte(tt.in), "", testDepth)
				if err != nil {
					t.Fatalf("OpenAIToAnthropicRequest: %v", err)
				}
				got, err := AnthropicToOpenAIRequest(mid, "", testDepth)
				if err != nil {
					t.Fatalf("AnthropicToOpenAIRequest(%s): %v", mid, err)
				}
				assertJSONEqual(t, "round trip", got, tt.want)
			})
		}
	})
}
