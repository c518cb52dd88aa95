use super::*;

#[test]
fn parses_the_documented_samples() {
    assert_eq!(
        parse(
            r#"{"type":"conversation_initiation_metadata","conversation_initiation_metadata_event":{"conversation_id":"conv_123","agent_output_audio_format":"ulaw_8000","user_input_audio_format":"pcm_16000"}}"#
        ),
        Ok(ServerEvent::Metadata {
            input: AudioFormat::Pcm(16000),
            output: AudioFormat::Ulaw8000,
            conversation_id: Some("conv_123".into()),
        })
    );
    let audio = r#"{"type":"audio","audio_event":{"audio_base_64":"//7+fn5+","event_id":3}}"#;
    let Ok(ServerEvent::Audio {
        audio_b64,
        event_id,
    }) = parse(audio)
    else {
        panic!("audio")
    };
    assert_eq!((audio_b64.as_ref(), event_id), ("//7+fn5+", Some(3)));
    assert!(matches!(audio_b64, Cow::Borrowed(_)));
    assert_eq!(
        parse(r#"{"type":"ping","ping_event":{"event_id":12345,"ping_ms":50}}"#),
        Ok(ServerEvent::Ping { event_id: 12345 })
    );
    assert_eq!(
        parse(r#"{"type":"interruption","interruption_event":{"event_id":3}}"#),
        Ok(ServerEvent::Interruption { event_id: Some(3) })
    );
    assert_eq!(
        parse(r#"{"type":"interruption","interruption_event":{"reason":"user"}}"#),
        Ok(ServerEvent::Interruption { event_id: None })
    );
    assert_eq!(
        parse(
            r#"{"type":"agent_response","agent_response_event":{"agent_response":"Hi","event_id":3}}"#
        ),
        Ok(ServerEvent::Other("agent_response"))
    );
    assert_eq!(
        parse(r#"{"type":"vad_score","vad_score_event":{"vad_score":0.95}}"#),
        Ok(ServerEvent::Other("vad_score"))
    );
    assert_eq!(
        parse(r#"{"type":"brand_new_thing"}"#),
        Ok(ServerEvent::Other("other"))
    );
    assert_eq!(
        parse(
            r#"{"type":"error","error_event":{"code":1008,"message":"x","error_type":"override_error"}}"#
        ),
        Ok(ServerEvent::Error {
            code: Some(1008),
            error_type: Some("override_error".into())
        })
    );
    assert_eq!(
        parse(r#"{"type":"error"}"#),
        Ok(ServerEvent::Error {
            code: None,
            error_type: None
        })
    );
}

#[test]
fn parses_tool_calls_and_tool_responses() {
    let call = r#"{"type":"client_tool_call","client_tool_call":{"tool_name":"transfer_to_number","tool_call_id":"toolu_01","parameters":{"phone_number":" +15551230000 ","reason":"billing"},"event_id":42}}"#;
    let Ok(ServerEvent::ClientToolCall(call)) = parse(call) else {
        panic!("tool call")
    };
    assert_eq!(call.tool_name, "transfer_to_number");
    assert_eq!(call.tool_call_id, "toolu_01");
    assert_eq!(call.phone_number.as_deref(), Some("+15551230000"));
    assert!(
        !format!("{call:?}").contains("1555"),
        "Debug hides arguments"
    );
    let bare = r#"{"type":"client_tool_call","client_tool_call":{"tool_name":"end_call","tool_call_id":"t2"}}"#;
    assert!(matches!(parse(bare), Ok(ServerEvent::ClientToolCall(c)) if c.phone_number.is_none()));
    assert_eq!(
        parse(r#"{"type":"client_tool_call","client_tool_call":{"tool_name":"x"}}"#),
        Err(AgentProtocolError::Malformed),
        "no id: nothing to answer"
    );
    assert_eq!(
        parse(
            r#"{"type":"agent_tool_response","agent_tool_response":{"tool_name":"end_call","tool_call_id":"t","tool_type":"system","is_error":false,"is_called":true,"event_id":61}}"#
        ),
        Ok(ServerEvent::AgentToolResponse {
            tool_name: "end_call".into(),
            is_error: false
        })
    );
}

#[test]
fn tool_results_and_user_messages_are_json_with_the_id_echoed() {
    let v: serde_json::Value = serde_json::from_str(&client_tool_result(
        "toolu_\"x",
        "{\"status\":\"ok\"}",
        false,
    ))
    .unwrap();
    assert_eq!(
        v,
        serde_json::json!({"type":"client_tool_result","tool_call_id":"toolu_\"x","result":"{\"status\":\"ok\"}","is_error":false})
    );
    let v: serde_json::Value = serde_json::from_str(&user_message("[keypad] 12#")).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"type":"user_message","text":"[keypad] 12#"})
    );
}

#[test]
fn missing_formats_default_to_pcm_16000_and_unknown_ones_fail() {
    assert_eq!(
        parse(
            r#"{"type":"conversation_initiation_metadata","conversation_initiation_metadata_event":{}}"#
        ),
        Ok(ServerEvent::Metadata {
            input: AudioFormat::Pcm(16000),
            output: AudioFormat::Pcm(16000),
            conversation_id: None,
        })
    );
    assert_eq!(
        parse(
            r#"{"type":"conversation_initiation_metadata","conversation_initiation_metadata_event":{"agent_output_audio_format":"mp3_44100"}}"#
        ),
        Err(AgentProtocolError::UnknownFormat)
    );
    for name in [
        "ulaw_8000",
        "pcm_8000",
        "pcm_16000",
        "pcm_22050",
        "pcm_24000",
        "pcm_44100",
        "pcm_48000",
    ] {
        assert_eq!(AudioFormat::parse(name).map(AudioFormat::name), Some(name));
    }
}

#[test]
fn malformed_frames_are_errors() {
    for text in [
        "nope",
        "{}",
        r#"{"type":"audio"}"#,
        r#"{"type":"ping","ping_event":{}}"#,
        r#"{"type":"audio","audio_event":{"audio_base_64":5}}"#,
    ] {
        assert_eq!(parse(text), Err(AgentProtocolError::Malformed), "{text}");
    }
}

#[test]
fn client_messages_have_the_documented_shape() {
    let mut vars = BTreeMap::new();
    vars.insert("first_name", "Ada");
    let v: serde_json::Value =
        serde_json::from_str(&InitiationClientData::new(vars).to_json()).unwrap();
    assert_eq!(v["type"], "conversation_initiation_client_data");
    assert_eq!(v["dynamic_variables"]["first_name"], "Ada");
    let v: serde_json::Value =
        serde_json::from_str(&InitiationClientData::new(BTreeMap::new()).to_json()).unwrap();
    assert!(v.get("dynamic_variables").is_none());
    assert_eq!(pong(7), r#"{"type":"pong","event_id":7}"#);
    let mut out = String::new();
    user_audio_chunk("AAAA", &mut out);
    assert_eq!(out, r#"{"user_audio_chunk":"AAAA"}"#);
}

#[test]
fn overrides_go_into_conversation_config_override_and_unset_ones_are_left_out() {
    use crate::context::AgentOverrides;
    let overrides = AgentOverrides {
        first_message: Some(String::new()),
        prompt: Some("You call to confirm an appointment".into()),
        language: Some("fr".into()),
        voice_id: Some("21m00Tcm4TlvDq8ikWAM".into()),
    };
    let v: serde_json::Value = serde_json::from_str(
        &InitiationClientData::new(BTreeMap::new())
            .with_overrides(&overrides)
            .to_json(),
    )
    .unwrap();
    let o = &v["conversation_config_override"];
    assert_eq!(o["agent"]["first_message"], "", "empty: the agent waits");
    assert_eq!(
        o["agent"]["prompt"]["prompt"],
        "You call to confirm an appointment"
    );
    assert_eq!(o["agent"]["language"], "fr");
    assert_eq!(o["tts"]["voice_id"], "21m00Tcm4TlvDq8ikWAM");

    let only_voice = AgentOverrides {
        voice_id: Some("v".into()),
        ..AgentOverrides::default()
    };
    let v: serde_json::Value = serde_json::from_str(
        &InitiationClientData::new(BTreeMap::new())
            .with_overrides(&only_voice)
            .to_json(),
    )
    .unwrap();
    assert!(
        v["conversation_config_override"].get("agent").is_none(),
        "{v}"
    );
    let none = AgentOverrides::default();
    let v: serde_json::Value = serde_json::from_str(
        &InitiationClientData::new(BTreeMap::new())
            .with_overrides(&none)
            .to_json(),
    )
    .unwrap();
    assert!(v.get("conversation_config_override").is_none(), "{v}");
}
